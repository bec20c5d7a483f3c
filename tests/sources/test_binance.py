"""Binance 24 h ticker: USDT-only pairs, recorded body, symbol echo, code/msg errors."""

from __future__ import annotations

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.sources.binance import Binance
from tests.conftest import documented, recorded

SOURCE = Binance()
RECORDED_TS = 1710328245.391


def test_recorded_body() -> None:
    """The recorded BTCUSDT ticker gives its exact last price and closeTime (ms string)."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("binance"), RECORDED_TS + 1))
    assert str(quote.price) == "73369.84000000"
    assert quote.exchange_ts == RECORDED_TS


def test_numeric_close_time() -> None:
    """closeTime as the JSON number Binance documents is read the same way."""
    body = recorded("binance") | {"closeTime": 1710328245391}
    assert SOURCE.parse("BTC-USDT", body, 0.0).exchange_ts == RECORDED_TS


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USDT", "https://api.binance.com/api/v3/ticker/24hr?symbol=BTCUSDT"),
        ("BTC-USD", "https://api.binance.com/api/v3/ticker/24hr?symbol=BTCUSD"),
        ("ETH-EUR", "https://api.binance.com/api/v3/ticker/24hr?symbol=ETHEUR"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The 24 h ticker URL names the symbol as BASEQUOTE."""
    assert SOURCE.url(pair) == url


@pytest.mark.parametrize(
    ("pair", "supported"), [("BTC-USDT", True), ("BTC-USD", False), ("ETH-EUR", False)]
)
def test_supports_only_usdt(pair: str, supported: bool) -> None:
    """Binance serves only -USDT pairs (binance.com has no USD market)."""
    assert SOURCE.supports(pair) is supported


def test_other_symbol_is_wrong_pair() -> None:
    """A ticker for another symbol is the wrong pair."""
    body = recorded("binance") | {"symbol": "ETHUSDT"}
    with pytest.raises(SourceWrongPair, match="asked for BTCUSDT, got symbol = 'ETHUSDT'"):
        SOURCE.parse("BTC-USDT", body, 0.0)


def test_invalid_symbol_is_bad_body() -> None:
    """``{"code": -1121, "msg": ...}`` is a bad body quoting code and message."""
    with pytest.raises(SourceBadBody, match=r"code -1121: Invalid symbol\.$"):
        SOURCE.parse("BTC-USDT", documented("binance", "invalid_symbol"), 0.0)


def test_geo_block_body_in_200_is_bad_body() -> None:
    """The geo-block message, if ever served with 200, is still refused as an error."""
    with pytest.raises(SourceBadBody, match="code 0: Service unavailable from a restricted"):
        SOURCE.parse("BTC-USDT", documented("binance", "geo_blocked"), 0.0)


def test_ip_ban_code_is_rate_limited() -> None:
    """Code -1003 (too many requests) is rate limited."""
    body = {"code": -1003, "msg": "Too many requests."}
    with pytest.raises(SourceRateLimited, match="-1003"):
        SOURCE.parse("BTC-USDT", body, 0.0)


@pytest.mark.parametrize("missing", ["symbol", "lastPrice", "closeTime"])
def test_missing_field_is_named(missing: str) -> None:
    """A ticker without its symbol, price or time is a bad body naming the field."""
    body = recorded("binance")
    del body[missing]
    with pytest.raises(SourceBadBody, match=f"missing field {missing}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)
