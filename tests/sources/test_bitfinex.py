"""Bitfinex v2 ticker: symbols, the positional array, JSON-number precision, error shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited
from bittrade_feed.sources.bitfinex import Bitfinex
from tests.conftest import FIXTURES, documented, recorded

SOURCE = Bitfinex()
NOW = 1_763_900_000.0
DOC_TEXT = (FIXTURES / "documented" / "bitfinex.json").read_text()


def test_recorded_body() -> None:
    """The recorded tBTCUST ticker gives LAST_PRICE ([6]) exactly, with no exchange time."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("bitfinex"), NOW))
    assert quote.price == Decimal("73350")
    assert quote.exchange_ts is None


def test_json_number_price_is_exact() -> None:
    """A fractional JSON number decoded off the wire becomes the exact Decimal, not a float."""
    raw = json.dumps(json.loads(DOC_TEXT)["cases"]["ticker"]["body"]).encode()
    quote = SOURCE.parse("BTC-USD", SOURCE.decode(raw, "application/json"), NOW)
    assert quote.price == Decimal("10644.00645389")
    assert str(quote.price) == "10644.00645389"


def test_json_nan_token_is_bad_body() -> None:
    """A bare ``NaN`` token in the array is refused as not a decimal."""
    raw = b"[1, 1, 1, 1, 1, 1, NaN, 1, 1, 1]"
    with pytest.raises(SourceBadBody, match=r"\[6\] is nan, not a decimal"):
        SOURCE.parse("BTC-USD", SOURCE.decode(raw, "application/json"), NOW)


@pytest.mark.parametrize(
    ("pair", "symbol"),
    [
        ("BTC-USD", "tBTCUSD"),
        ("BTC-USDT", "tBTCUST"),
        ("ETH-EUR", "tETHEUR"),
        ("DOGE-USD", "tDOGE:USD"),
        ("BTC-EURC", "tBTC:EURC"),
    ],
)
def test_symbol_and_url(pair: str, symbol: str) -> None:
    """Tether is UST; a code longer than 3 letters takes the colon form."""
    assert SOURCE.symbol(pair) == symbol
    assert SOURCE.url(pair) == f"https://api-pub.bitfinex.com/v2/ticker/{symbol}"


def test_rate_limit_object_is_rate_limited() -> None:
    """``{"error": "ERR_RATE_LIMIT"}`` is rate limited, with no known delay."""
    with pytest.raises(SourceRateLimited, match="ERR_RATE_LIMIT") as info:
        SOURCE.parse("BTC-USD", documented("bitfinex", "rate_limited"), NOW)
    assert info.value.retry_after is None


def test_error_array_is_bad_body() -> None:
    """``["error", code, msg]`` is a bad body quoting code and message, not retried."""
    with pytest.raises(SourceBadBody, match="error in 200: 10020 limit: invalid") as info:
        SOURCE.parse("BTC-USD", documented("bitfinex", "error"), NOW)
    assert not info.value.retryable


def test_maintenance_is_retryable_bad_body() -> None:
    """The maintenance error (20060) is a bad body worth retrying later."""
    with pytest.raises(SourceBadBody, match="20060 maintenance") as info:
        SOURCE.parse("BTC-USD", documented("bitfinex", "maintenance"), NOW)
    assert info.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        {"message": "something else"},
        [],
        [1, 2, 3],
        list(range(1, 17)),
        "tBTCUSD",
        None,
    ],
)
def test_other_shapes_are_bad_body(body: Any) -> None:
    """Anything but a 10-element array (a funding ticker has 16) is a bad body."""
    with pytest.raises(SourceBadBody):
        SOURCE.parse("BTC-USD", body, NOW)


def test_short_array_names_the_expected_shape() -> None:
    """A truncated array is a bad body that says a 10-number list was expected."""
    with pytest.raises(SourceBadBody, match="expected a list of 10 numbers, got"):
        SOURCE.parse("BTC-USD", recorded("bitfinex")[:6], NOW)
