"""CoinGecko simple price: ids, supported pairs, JSON-number prices, last_updated_at, errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited
from bittrade_feed.sources.coingecko import CoinGecko
from tests.conftest import FIXTURES, documented

SOURCE = CoinGecko()
UPDATED = 1711356300.0
DOC_TEXT = (FIXTURES / "documented" / "coingecko.json").read_text()


def test_documented_body() -> None:
    """The documented example gives the exact JSON-number price and last_updated_at."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USD", documented("coingecko", "price"), UPDATED + 30))
    assert str(quote.price) == "67187.3358936566"
    assert quote.exchange_ts == UPDATED


def test_price_off_the_wire_is_exact() -> None:
    """Decoded from bytes, the price keeps every digit (no float on the way)."""
    raw = json.dumps(json.loads(DOC_TEXT)["cases"]["price"]["body"]).encode()
    quote = SOURCE.parse("BTC-USD", SOURCE.decode(raw, "application/json"), 0.0)
    assert quote.price == Decimal("67187.3358936566")


def test_cache_age_is_tolerated() -> None:
    """A 150 s old quote passes: CoinGecko caches for 60 s, so its limit is 180 s."""
    assert SOURCE.max_quote_age == 180.0
    quote = SOURCE.parse("BTC-USD", documented("coingecko", "price"), UPDATED + 150)
    assert SOURCE.validate(quote) is quote


@pytest.mark.parametrize(
    ("pair", "query"),
    [
        ("BTC-USD", "ids=bitcoin&vs_currencies=usd"),
        ("ETH-EUR", "ids=ethereum&vs_currencies=eur"),
        ("SOL-GBP", "ids=solana&vs_currencies=gbp"),
    ],
)
def test_url(pair: str, query: str) -> None:
    """The URL asks for one coin id in one lower-case currency, with its update time."""
    assert SOURCE.url(pair) == (
        f"https://api.coingecko.com/api/v3/simple/price?{query}&include_last_updated_at=true"
    )


@pytest.mark.parametrize(
    ("pair", "supported"),
    [
        ("BTC-USD", True),
        ("ETH-EUR", True),
        ("LTC-JPY", True),
        ("BTC-USDT", False),
        ("PEPE-USD", False),
    ],
)
def test_supports(pair: str, supported: bool) -> None:
    """Only coins with a known id, in a vs_currency CoinGecko has (no USDT), are supported."""
    assert SOURCE.supports(pair) is supported


def test_unknown_coin_has_no_symbol() -> None:
    """Asking the id of an unmapped coin is a ValueError naming it."""
    with pytest.raises(ValueError, match="no coin id for PEPE"):
        SOURCE.url("PEPE-USD")


def test_empty_answer_is_bad_body() -> None:
    """``{}`` (CoinGecko's answer for an unknown id) is a bad body: no price for the pair."""
    with pytest.raises(SourceBadBody, match="coingecko has no price for bitcoin/usd"):
        SOURCE.parse("BTC-USD", documented("coingecko", "unknown_id"), 0.0)


def test_missing_currency_is_bad_body() -> None:
    """An answer without the asked currency is a bad body naming coin and currency."""
    with pytest.raises(SourceBadBody, match="coingecko has no price for bitcoin/eur"):
        SOURCE.parse("BTC-EUR", documented("coingecko", "price"), 0.0)


def test_rate_limit_status_is_rate_limited() -> None:
    """A ``status.error_code`` of 429 is rate limited, quoting the message."""
    with pytest.raises(SourceRateLimited, match="429: You've exceeded the Rate Limit"):
        SOURCE.parse("BTC-USD", documented("coingecko", "rate_limited"), 0.0)


def test_other_status_error_is_bad_body() -> None:
    """Any other ``status.error_code`` is a bad body quoting it."""
    body = {"status": {"error_code": 10002, "error_message": "API Key Missing"}}
    with pytest.raises(SourceBadBody, match="error in 200: 10002: API Key Missing"):
        SOURCE.parse("BTC-USD", body, 0.0)


def test_missing_update_time_is_named() -> None:
    """A price without ``last_updated_at`` is a bad body naming the field."""
    body = documented("coingecko", "price")
    del body["bitcoin"]["last_updated_at"]
    with pytest.raises(SourceBadBody, match=r"missing field bitcoin\.last_updated_at$"):
        SOURCE.parse("BTC-USD", body, 0.0)
