"""Coinbase Exchange product ticker: URL, recorded and documented bodies, time, errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bittrade_feed.errors import SourceBadBody
from bittrade_feed.sources.coinbase_exchange import CoinbaseExchange
from tests.conftest import documented, recorded

SOURCE = CoinbaseExchange()
RECORDED_TS = 1710328241.27


def test_recorded_body() -> None:
    """The recorded BTC-USDT ticker gives its exact price and trade time (to the ms)."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("coinbaseexchange"), RECORDED_TS + 1))
    assert str(quote.price) == "73367.8"
    assert quote.exchange_ts == RECORDED_TS
    assert quote.source == "coinbase_exchange"


def test_documented_body() -> None:
    """The documented example (numeric trade_id, ms time) parses the same way."""
    quote = SOURCE.parse("BTC-USD", documented("coinbase_exchange", "ticker"), 0.0)
    assert quote.price == Decimal("6268.48")
    assert quote.exchange_ts == 1584663777.833


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USD", "https://api.exchange.coinbase.com/products/BTC-USD/ticker"),
        ("BTC-USDT", "https://api.exchange.coinbase.com/products/BTC-USDT/ticker"),
        ("ETH-EUR", "https://api.exchange.coinbase.com/products/ETH-EUR/ticker"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The ticker URL names the product as BASE-QUOTE."""
    assert SOURCE.url(pair) == url


def test_message_body_is_bad_body() -> None:
    """A ``{"message": ...}`` body is a bad body quoting the message."""
    with pytest.raises(SourceBadBody, match="error in 200: Invalid Price"):
        SOURCE.parse("BTC-USD", documented("coinbase_exchange", "error"), 0.0)


@pytest.mark.parametrize("when", ["yesterday", 1710328241, None, "2024-13-45T00:00:00Z"])
def test_unreadable_time_is_bad_body(when: Any) -> None:
    """A ``time`` that is not an ISO 8601 string is a bad body quoting it."""
    body = recorded("coinbaseexchange") | {"time": when}
    with pytest.raises(SourceBadBody, match=r"time is .*, not an ISO 8601 time"):
        SOURCE.parse("BTC-USDT", body, 0.0)


@pytest.mark.parametrize("missing", ["price", "time"])
def test_missing_field_is_named(missing: str) -> None:
    """A ticker without its price or time is a bad body naming the field."""
    body = recorded("coinbaseexchange")
    del body[missing]
    with pytest.raises(SourceBadBody, match=f"missing field {missing}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)
