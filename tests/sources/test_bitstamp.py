"""Bitstamp v2 ticker: URL, recorded and documented bodies, string timestamp, errors."""

from __future__ import annotations

from typing import Any

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited
from bittrade_feed.sources.bitstamp import Bitstamp
from tests.conftest import documented, recorded

SOURCE = Bitstamp()


def test_recorded_body() -> None:
    """The recorded btcusdt ticker gives its exact price and its time in seconds."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("bitstamp"), 1710328242.0))
    assert str(quote.price) == "73285"
    assert quote.exchange_ts == 1710328241.0


def test_documented_body() -> None:
    """The documented example parses the same way."""
    quote = SOURCE.parse("BTC-USD", documented("bitstamp", "ticker"), 0.0)
    assert str(quote.price) == "7675.00"
    assert quote.exchange_ts == 1523543610.0


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USD", "https://www.bitstamp.net/api/v2/ticker/btcusd/"),
        ("BTC-USDT", "https://www.bitstamp.net/api/v2/ticker/btcusdt/"),
        ("ETH-EUR", "https://www.bitstamp.net/api/v2/ticker/etheur/"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The ticker URL names the pair in lower case, with a trailing slash."""
    assert SOURCE.url(pair) == url


def test_rate_limit_response_code_is_rate_limited() -> None:
    """``response_code`` 400.002 (documented as the rate limit) is rate limited."""
    body = {
        "response_code": "400.002",
        "response_explanation": "Request rejected due to exceeded rate limit",
    }
    with pytest.raises(SourceRateLimited, match=r"400\.002, response_explanation Request rej"):
        SOURCE.parse("BTC-USD", body, 0.0)


# Error shapes named in the reference (response_code + explanation; code/reason; error).
@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {
                "response_code": "400.003",
                "response_explanation": "Trading for provided market is disabled",
            },
            "response_code 400.003, response_explanation Trading for provided market is disabled",
        ),
        ({"status": "error", "code": "API0005", "reason": "x"}, "code API0005, reason x"),
        ({"error": "Not found"}, "error Not found"),
    ],
)
def test_error_fields_are_bad_body(body: Any, says: str) -> None:
    """A body with an error field is a bad body quoting its code and explanation."""
    with pytest.raises(SourceBadBody, match=f"error in 200: {says}$"):
        SOURCE.parse("BTC-USD", body, 0.0)


@pytest.mark.parametrize("missing", ["last", "timestamp"])
def test_missing_field_is_named(missing: str) -> None:
    """A ticker without its price or time is a bad body naming the field."""
    body = recorded("bitstamp")
    del body[missing]
    with pytest.raises(SourceBadBody, match=f"missing field {missing}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)


def test_unreadable_timestamp_is_bad_body() -> None:
    """A timestamp that is not a number is a bad body quoting it."""
    body = recorded("bitstamp") | {"timestamp": "soon"}
    with pytest.raises(SourceBadBody, match="timestamp is 'soon', not a timestamp"):
        SOURCE.parse("BTC-USDT", body, 0.0)
