"""Gemini v1 pubticker: URL, recorded and documented bodies, ms timestamp, volume keys."""

from __future__ import annotations

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.sources.gemini import Gemini
from tests.conftest import documented, recorded

SOURCE = Gemini()


def test_recorded_body() -> None:
    """The recorded btcusdt ticker gives its exact price; its ms timestamp is a string."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("gemini"), 1710328246.0))
    assert str(quote.price) == "73268.24"
    assert quote.exchange_ts == 1710328245.0


def test_documented_body_with_numeric_timestamp() -> None:
    """The documented example has the ms timestamp as a number, read the same way."""
    quote = SOURCE.parse("BTC-USD", documented("gemini", "ticker"), 0.0)
    assert str(quote.price) == "977.65"
    assert quote.exchange_ts == 1483018200.0


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USD", "https://api.gemini.com/v1/pubticker/btcusd"),
        ("BTC-USDT", "https://api.gemini.com/v1/pubticker/btcusdt"),
        ("ETH-EUR", "https://api.gemini.com/v1/pubticker/etheur"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The pubticker URL names the pair in lower case."""
    assert SOURCE.url(pair) == url


def test_other_quote_in_volume_is_wrong_pair() -> None:
    """Volume in USDT when USD was asked means another market answered."""
    with pytest.raises(SourceWrongPair, match="asked for BTC-USD, volume is in BTC, USDT"):
        SOURCE.parse("BTC-USD", recorded("gemini"), 0.0)


def test_perpetual_is_wrong_pair_for_spot() -> None:
    """The recorded GUSD perpetual is not an answer for BTC-USD."""
    with pytest.raises(SourceWrongPair, match="volume is in BTC, GUSD"):
        SOURCE.parse("BTC-USD", recorded("gemini", case=1), 0.0)


# Shape from Gemini's ErrorResponse schema (result, reason, message).
def test_error_body_is_bad_body() -> None:
    """``{"result": "error"}`` is a bad body quoting reason and message."""
    body = {"result": "error", "reason": "InvalidSymbol", "message": "Supplied value 'x'"}
    with pytest.raises(SourceBadBody, match="error in 200: InvalidSymbol: Supplied value 'x'"):
        SOURCE.parse("BTC-USD", body, 0.0)


def test_rate_limited_reason_is_rate_limited() -> None:
    """The ``RateLimited`` reason is rate limited."""
    body = {"result": "error", "reason": "RateLimited", "message": "Requests were throttled"}
    with pytest.raises(SourceRateLimited, match="RateLimited"):
        SOURCE.parse("BTC-USD", body, 0.0)


@pytest.mark.parametrize(("missing", "named"), [("last", "last"), ("volume", "volume")])
def test_missing_field_is_named(missing: str, named: str) -> None:
    """A ticker without its price or volume is a bad body naming the field."""
    body = recorded("gemini")
    del body[missing]
    with pytest.raises(SourceBadBody, match=f"missing field {named}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)


def test_missing_timestamp_is_named() -> None:
    """A volume without its timestamp is a bad body naming ``volume.timestamp``."""
    body = recorded("gemini")
    del body["volume"]["timestamp"]
    with pytest.raises(SourceBadBody, match=r"missing field volume\.timestamp$"):
        SOURCE.parse("BTC-USDT", body, 0.0)
