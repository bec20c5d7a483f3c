"""OKX v5 ticker: USDT-only pairs, recorded body, code/msg errors, instId echo."""

from __future__ import annotations

from typing import Any

import pytest

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.sources.okx import Okx
from tests.conftest import documented, recorded

SOURCE = Okx()
RECORDED_TS = 1710328243.709


def test_recorded_body() -> None:
    """The recorded BTC-USDT ticker gives its exact price and ms timestamp."""
    quote = SOURCE.validate(SOURCE.parse("BTC-USDT", recorded("okx"), RECORDED_TS + 1))
    assert str(quote.price) == "73384.8"
    assert quote.exchange_ts == RECORDED_TS


@pytest.mark.parametrize(
    ("pair", "url"),
    [
        ("BTC-USDT", "https://www.okx.com/api/v5/market/ticker?instId=BTC-USDT"),
        ("BTC-USD", "https://www.okx.com/api/v5/market/ticker?instId=BTC-USD"),
        ("ETH-EUR", "https://www.okx.com/api/v5/market/ticker?instId=ETH-EUR"),
    ],
)
def test_url(pair: str, url: str) -> None:
    """The ticker URL names the instrument as BASE-QUOTE."""
    assert SOURCE.url(pair) == url


@pytest.mark.parametrize(
    ("pair", "supported"),
    [("BTC-USDT", True), ("ETH-USDT", True), ("BTC-USD", False), ("BTC-USDC", False)],
)
def test_supports_only_usdt(pair: str, supported: bool) -> None:
    """OKX serves only -USDT pairs (it has no USD spot)."""
    assert SOURCE.supports(pair) is supported


def test_swap_answer_is_wrong_pair() -> None:
    """The documented perpetual-swap ticker is the wrong pair for BTC-USDT spot."""
    with pytest.raises(SourceWrongPair, match=r"asked for BTC-USDT, got .*'BTC-USD-SWAP'"):
        SOURCE.parse("BTC-USDT", documented("okx", "swap_ticker"), 0.0)


def test_unknown_instrument_is_bad_body() -> None:
    """A non-zero ``code`` is a bad body quoting code and message, not retried."""
    body = documented("okx", "unknown_instrument")
    with pytest.raises(SourceBadBody, match="code 51001: Instrument ID does not exist") as info:
        SOURCE.parse("BTC-USDT", body, 0.0)
    assert not info.value.retryable


def test_50011_is_rate_limited() -> None:
    """Code 50011 is rate limited."""
    with pytest.raises(SourceRateLimited, match="50011: Too Many Requests") as info:
        SOURCE.parse("BTC-USDT", documented("okx", "rate_limited"), 0.0)
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    ("code", "msg"), [("50001", "Service temporarily unavailable"), ("50013", "System is busy")]
)
def test_busy_codes_are_retryable(code: str, msg: str) -> None:
    """Codes 50001 and 50013 are bad bodies worth retrying."""
    with pytest.raises(SourceBadBody, match=f"code {code}: {msg}") as info:
        SOURCE.parse("BTC-USDT", {"code": code, "msg": msg, "data": []}, 0.0)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"msg": "", "data": []}, "code"),
        ({"code": "0", "msg": "", "data": []}, r"data\[0\]"),
        ({"code": "0", "msg": ""}, "data"),
    ],
)
def test_missing_field_is_named(body: Any, missing: str) -> None:
    """A body without code or data is a bad body naming what is missing."""
    with pytest.raises(SourceBadBody, match=f"missing field {missing}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)


@pytest.mark.parametrize("missing", ["last", "ts"])
def test_missing_ticker_field_is_named(missing: str) -> None:
    """A ticker without its price or time is a bad body naming ``data[0].<field>``."""
    body = recorded("okx")
    del body["data"][0][missing]
    with pytest.raises(SourceBadBody, match=rf"missing field data\[0\]\.{missing}$"):
        SOURCE.parse("BTC-USDT", body, 0.0)
