"""The simulated source: a seeded, labelled random walk that never touches the network."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

import aiohttp
import pytest

from bittrade_feed.sources import REAL_SOURCES, SOURCES
from bittrade_feed.sources import simulated as module
from bittrade_feed.sources.simulated import Simulated
from tests.fakeclock import FakeClock

# fetch() never touches the HTTP session, so none is opened.
NO_SESSION = cast(aiohttp.ClientSession, None)


async def walk(source: Simulated, pair: str, steps: int) -> list[Decimal]:
    """The next ``steps`` prices of ``pair``."""
    clock = FakeClock()
    return [(await source.fetch(NO_SESSION, pair, 1.0, clock)).price for _ in range(steps)]


async def test_quote_is_labelled_and_stamped_with_the_clock() -> None:
    """A quote comes from "simulated", at the clock's time, with no exchange time."""
    clock = FakeClock(wall=1_700_000_000.0)
    quote = await Simulated().fetch(NO_SESSION, "BTC-USD", 1.0, clock)
    assert quote.source == "simulated"
    assert quote.pair == "BTC-USD"
    assert quote.received_at == 1_700_000_000.0
    assert quote.exchange_ts is None


async def test_same_seed_same_walk() -> None:
    """Two simulators with one seed produce the same prices; another seed differs."""
    first = await walk(Simulated(seed=7), "BTC-USD", 20)
    assert first == await walk(Simulated(seed=7), "BTC-USD", 20)
    assert first != await walk(Simulated(seed=8), "BTC-USD", 20)


async def test_prices_move_in_cents() -> None:
    """Every price has exactly two decimals, and the walk does move."""
    prices = await walk(Simulated(), "ETH-USD", 50)
    assert all(p.as_tuple().exponent == -2 for p in prices)
    assert len(set(prices)) > 1


@pytest.mark.parametrize(
    ("pair", "start"), [("BTC-USD", 60000), ("ETH-EUR", 3000), ("SOL-USDT", 100)]
)
async def test_default_starting_prices(pair: str, start: int) -> None:
    """BTC starts near 60000, ETH near 3000, anything else near 100."""
    (price,) = await walk(Simulated(), pair, 1)
    assert abs(price - start) / start < Decimal("0.01")


async def test_explicit_start() -> None:
    """A given start price is where every pair's walk begins."""
    (price,) = await walk(Simulated(start=Decimal(5)), "BTC-USD", 1)
    assert abs(price - 5) < Decimal("0.1")


async def test_pairs_walk_separately() -> None:
    """Each pair keeps its own price."""
    source = Simulated(volatility=0.0)
    assert await walk(source, "BTC-USD", 2) == [Decimal("60000.00")] * 2
    assert await walk(source, "ETH-USD", 1) == [Decimal("3000.00")]


async def test_price_never_reaches_zero() -> None:
    """Even a wild walk from a tiny start never gives a price at or below zero."""
    prices = await walk(Simulated(start=Decimal("0.02"), volatility=5.0), "BTC-USD", 300)
    assert min(prices) >= Decimal("0.01")


def test_url_and_parse() -> None:
    """The URL is only a label; parse reads the ``{"price": ...}`` shape fetch builds."""
    source = Simulated()
    assert source.url("BTC-USD") == "simulated://BTC-USD"
    assert source.parse("BTC-USD", {"price": "1.23"}, 5.0).price == Decimal("1.23")


def test_clearly_labelled_and_never_a_default() -> None:
    """The module says its prices are fake, and it is no default source."""
    assert module.__doc__ is not None
    assert "FAKE" in module.__doc__
    assert SOURCES["simulated"] is Simulated
    assert "simulated" not in REAL_SOURCES
    assert Simulated().supports("BTC-USD")
