"""Kraken Ticker: URL aliases, recorded and documented bodies, errors in 200, key matching."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.sources.kraken import Kraken
from tests.conftest import documented, recorded

SOURCE = Kraken()
NOW = 1_763_900_000.0


def test_recorded_body() -> None:
    """The recorded XBTUSDT ticker gives the exact last-trade price and no exchange time."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("kraken"), NOW))
    assert quote.price == Decimal("73380.60000")
    assert str(quote.price) == "73380.60000"
    assert quote.exchange_ts is None


def test_documented_renamed_key() -> None:
    """XBTUSD answers under Kraken's own key XXBTZUSD, which still matches BTC-USD."""
    quote = SOURCE.parse("BTC-USD", documented("kraken", "ticker"), NOW)
    assert str(quote.price) == "30303.20000"


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USD", "https://api.kraken.com/0/public/Ticker?pair=XBTUSD"),
        ("BTC-USDT", "https://api.kraken.com/0/public/Ticker?pair=XBTUSDT"),
        ("ETH-EUR", "https://api.kraken.com/0/public/Ticker?pair=ETHEUR"),
        ("DOGE-USD", "https://api.kraken.com/0/public/Ticker?pair=XDGUSD"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """Kraken's names are used for bitcoin (XBT) and dogecoin (XDG)."""
    assert SOURCE.url(pair) == url


def test_documented_error_is_bad_body() -> None:
    """An ``error`` entry in a 200 is a bad body quoting it, not retried."""
    with pytest.raises(SourceBadBody, match="EQuery:Unknown asset pair") as info:
        SOURCE.parse("BTC-USD", documented("kraken", "unknown_pair"), NOW)
    assert not info.value.retryable


@pytest.mark.parametrize("error", ["EService:Unavailable", "EService:Busy"])
def test_service_error_is_retryable_bad_body(error: str) -> None:
    """Kraken's "unavailable/busy" errors in a 200 are bad bodies worth retrying."""
    with pytest.raises(SourceBadBody, match=error) as info:
        SOURCE.parse("BTC-USD", {"error": [error]}, NOW)
    assert info.value.retryable


def test_rate_limit_error_is_rate_limited() -> None:
    """``EAPI:Rate limit exceeded`` in a 200 is rate limited, with no known delay."""
    with pytest.raises(SourceRateLimited, match="Rate limit") as info:
        SOURCE.parse("BTC-USD", {"error": ["EAPI:Rate limit exceeded"]}, NOW)
    assert info.value.retry_after is None


@pytest.mark.parametrize("pair", ["BTC-USD", "ETH-USDT", "BTC-EUR"])
def test_other_key_is_wrong_pair(pair: str) -> None:
    """A result key for another market is the wrong pair, even when USD is inside USDT."""
    with pytest.raises(SourceWrongPair, match="got XBTUSDT"):
        SOURCE.parse(pair, recorded("kraken"), NOW)


def test_two_results_is_bad_body() -> None:
    """A result holding several pairs is a bad body."""
    body = recorded("kraken")
    body["result"]["XETHZUSD"] = body["result"]["XBTUSDT"]
    with pytest.raises(SourceBadBody, match="exactly one pair"):
        SOURCE.parse("BTC-USDT", body, NOW)


def test_missing_last_trade_is_named() -> None:
    """A ticker without ``c`` is a bad body naming it."""
    body = recorded("kraken")
    del body["result"]["XBTUSDT"]["c"]
    with pytest.raises(SourceBadBody, match=r"missing field c$"):
        SOURCE.parse("BTC-USDT", body, NOW)
