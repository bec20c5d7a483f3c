"""Hostile answers: whatever an exchange sends, a source gives a Quote or a SourceError.

The named cases of issue 10 go through a real HTTP round trip (the fake exchanges on
loopback); the properties run every parser on any JSON value, any mutation of a real
answer, and any byte string, at the parse boundary (``Source.read``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bittrade_feed.errors import MAX_MESSAGE, SourceBadBody, SourceError, SourceRejectedPrice
from bittrade_feed.models import Quote
from bittrade_feed.sources import SOURCES
from bittrade_feed.sources.base import MAX_BODY_BYTES, price_problem
from tests.fakeclock import FakeClock
from tests.fakeexchange import FakeExchanges
from tests.sources.test_base import EVERY_SOURCE, replace_at

JSON = {"Content-Type": "application/json"}
NESTED = b"[" * 50_000 + b"]" * 50_000
"""Far inside the 1 MiB cap, far past json's recursion limit."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as client:
        yield client


async def fetch(fx: FakeExchanges, session: aiohttp.ClientSession, name: str) -> Quote:
    """Ask the fake ``name`` once for its pair in EVERY_SOURCE."""
    source = SOURCES[name](fx.url(name))
    return await source.fetch(session, EVERY_SOURCE[name][0], 10.0, FakeClock())


# The cases from issue 10, each through one HTTP round trip.


async def test_deeply_nested_json_is_bad_body(fx: FakeExchanges, session) -> None:
    """50,000 nested brackets (RecursionError in json) is a bad body saying so."""
    fx.answer("kraken", raw=NESTED, headers=JSON)
    with pytest.raises(SourceBadBody, match="JSON nested too deeply"):
        await fetch(fx, session, "kraken")


async def test_kraken_error_not_a_list_is_bad_body(fx: FakeExchanges, session) -> None:
    """Kraken ``{"error": 1}`` (a TypeError in the parser before) is a bad body naming it."""
    fx.answer("kraken", body={"error": 1})
    with pytest.raises(SourceBadBody, match="error is int, not a list"):
        await fetch(fx, session, "kraken")


async def test_bitfinex_number_beyond_decimal_range_is_bad_body(fx: FakeExchanges, session) -> None:
    """``1e9999999999999999999`` in the array (InvalidOperation while decoding) is a bad body."""
    fx.answer("bitfinex", raw=b"[1,1,1,1,1,1,1e9999999999999999999,1,1,1]", headers=JSON)
    with pytest.raises(SourceBadBody, match="a number out of range"):
        await fetch(fx, session, "bitfinex")


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        ("1E+28", "not below the bound of 1000000000000000"),
        ("1E+1000000", "not below the bound"),
        ("1000000000000000", "not below the bound"),
        ("0.0000000000000000001", "19 decimal places"),
        ("73380.1234567890123456", "21 significant digits \\(limit 18\\)"),
    ],
)
async def test_price_out_of_bounds_is_rejected(
    fx: FakeExchanges, session, price: str, problem: str
) -> None:
    """Huge, too fine and too precise prices are refused by name before aggregation."""
    fx.price("kraken", price)
    with pytest.raises(SourceRejectedPrice, match=problem):
        await fetch(fx, session, "kraken")


def test_price_bounds_edges() -> None:
    """The largest and finest accepted prices pass; trailing zeros do not count as digits."""
    assert price_problem(Decimal("999999999999999.999")) == ""
    assert price_problem(Decimal("0.000000000000000001")) == ""
    assert price_problem(Decimal("123456789012345.678")) == ""
    assert price_problem(Decimal("73380.60000000000000000000000")) == ""
    assert "19 significant" in price_problem(Decimal("1234567890123.456789"))


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@pytest.mark.parametrize(
    "raw",
    [NESTED, b'{"error": 1}', b"[1e9999999999999999999]", b"\xff\xfe", b"[]", b"9" * 5000],
    ids=["nested", "error-int", "huge-number", "not-utf8", "empty-list", "5000-digits"],
)
async def test_every_source_names_hostile_bodies(
    fx: FakeExchanges, session, name: str, raw: bytes
) -> None:
    """Each source, over HTTP, turns a few hostile bodies into a SourceError, nothing else."""
    fx.answer(name, raw=raw, headers=JSON)
    with pytest.raises(SourceError):
        await fetch(fx, session, name)


# Properties at the parse boundary.

NUMBERISH = st.sampled_from(
    ["1E+1000000", "1e9999999999999999999", "NaN", "sNaN", "-0", "Infinity", "0.00000065"]
) | st.decimals(allow_nan=True, allow_infinity=True).map(str)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | NUMBERISH
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value, the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += _paths(child, (*prefix, i))
    return found


def _read_strict(name: str, raw: bytes) -> Quote:
    """``raw`` read as the answer of ``name``, received just after its recorded time."""
    source = SOURCES[name]()
    pair, body, _ = EVERY_SOURCE[name]
    received = (source.parse(pair, body, 0.0).exchange_ts or 0.0) + 1.0
    return source.read(pair, raw, "application/json", received)


def _read(name: str, raw: bytes) -> None:
    """Read ``raw`` as the answer of ``name``: a Quote or a SourceError, never else."""
    outcome: Quote | SourceError
    try:
        outcome = _read_strict(name, raw)
    except SourceError as err:
        outcome = err
    if isinstance(outcome, SourceError):
        assert outcome.source == name
        assert len(outcome.message) <= MAX_MESSAGE, "the message must stay one short log line"
    else:
        assert isinstance(outcome, Quote)
        assert price_problem(outcome.price) == ""


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@PROPERTY
@given(value=VALUES)
def test_any_json_value_is_quote_or_source_error(name: str, value: Any) -> None:
    """Any JSON document at all is a Quote or a SourceError for every source."""
    _read(name, json.dumps(value).encode())


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@PROPERTY
@given(data=st.data(), value=VALUES)
def test_any_mutation_of_a_real_answer_is_quote_or_source_error(
    name: str, data: st.DataObject, value: Any
) -> None:
    """A real answer with any one part replaced by any JSON value: a Quote or a SourceError."""
    body = EVERY_SOURCE[name][1]
    body = json.loads(json.dumps(body, default=str))
    path = data.draw(st.sampled_from(_paths(body)))
    _read(name, json.dumps(replace_at(body, path, value)).encode())


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@PROPERTY
@given(
    raw=st.binary(max_size=512)
    | st.integers(0, MAX_BODY_BYTES // 2).map(lambda n: b"[" * n)
    | st.integers(0, MAX_BODY_BYTES // 4).map(lambda n: b'{"a":' * n)
)
def test_any_bytes_are_quote_or_source_error(name: str, raw: bytes) -> None:
    """Any byte string up to the cap (nesting included) is a Quote or a SourceError."""
    _read(name, raw)


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
def test_real_answer_with_hostile_price_is_source_error(name: str) -> None:
    """The real answer of each source with a price past the bound is refused by name."""
    body = json.loads(json.dumps(EVERY_SOURCE[name][1], default=str))
    for price in ("1E+28", "1E+1000000"):
        path = EVERY_SOURCE[name][2]
        raw = json.dumps(replace_at(body, path, price)).encode()
        with pytest.raises(SourceRejectedPrice):
            _read_strict(name, raw)
