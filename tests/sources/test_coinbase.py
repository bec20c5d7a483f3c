"""Coinbase retail v2 spot price: URL, the documented bodies, errors and pair echo."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.sources.coinbase import Coinbase
from tests.conftest import documented

SOURCE = Coinbase()
NOW = 1_763_900_000.0


def test_documented_spot_body() -> None:
    """The documented example (no ``base``) gives its exact price and no exchange time."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USD", documented("coinbase", "spot"), NOW))
    assert str(quote.price) == "1015.00"
    assert (quote.source, quote.pair, quote.received_at) == ("coinbase", "BTC-USD", NOW)
    assert quote.exchange_ts is None


def test_live_shape_with_base() -> None:
    """The live shape with ``base`` is accepted when base and currency match the pair."""
    quote = SOURCE.parse("LTC-USD", documented("coinbase", "spot_with_base"), NOW)
    assert quote.price == Decimal("1020.25")


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USD", "https://api.coinbase.com/v2/prices/BTC-USD/spot"),
        ("BTC-USDT", "https://api.coinbase.com/v2/prices/BTC-USDT/spot"),
        ("ETH-EUR", "https://api.coinbase.com/v2/prices/ETH-EUR/spot"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The spot URL names the pair as BASE-QUOTE."""
    assert SOURCE.url(pair) == url


def test_base_url_override() -> None:
    """A configured base URL replaces the host, trailing slash or not."""
    source = Coinbase("http://127.0.0.1:8080/coinbase/")
    assert source.url("BTC-USD") == "http://127.0.0.1:8080/coinbase/v2/prices/BTC-USD/spot"


def test_errors_list_is_bad_body() -> None:
    """A body with an ``errors`` list is a bad body naming the error id and message."""
    with pytest.raises(SourceBadBody, match="error in 200: not_found: Not found"):
        SOURCE.parse("BTC-USD", documented("coinbase", "not_found"), NOW)


def test_rate_limit_error_rests_the_source() -> None:
    """``rate_limit_exceeded`` in the errors list is a rate limit, like the other exchanges'."""
    with pytest.raises(SourceRateLimited, match="error in 200: rate_limit_exceeded"):
        SOURCE.parse("BTC-USD", documented("coinbase", "rate_limit_exceeded"), NOW)


def test_other_currency_is_wrong_pair() -> None:
    """An answer in another quote currency is the wrong pair."""
    with pytest.raises(SourceWrongPair, match=r"asked for EUR, got data\.currency = 'USD'"):
        SOURCE.parse("BTC-EUR", documented("coinbase", "spot"), NOW)


def test_other_base_is_wrong_pair() -> None:
    """An answer for another coin is the wrong pair."""
    with pytest.raises(SourceWrongPair, match=r"asked for BTC, got data\.base = 'LTC'"):
        SOURCE.parse("BTC-USD", documented("coinbase", "spot_with_base"), NOW)


@pytest.mark.parametrize(
    ("body", "missing"),
    [({"data": {"currency": "USD"}}, "data.amount"), ({}, "data"), ([], "data")],
)
def test_missing_field_is_named(body: Any, missing: str) -> None:
    """A body without the amount is a bad body naming the missing field."""
    with pytest.raises(SourceBadBody, match=f"missing field {missing}$"):
        SOURCE.parse("BTC-USD", body, NOW)
