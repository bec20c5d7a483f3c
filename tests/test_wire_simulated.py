"""The wire's ``simulated`` flag: every price and status says whether its prices are fake."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from aiohttp.pytest_plugin import AiohttpClient
from hypothesis import given
from hypothesis import strategies as st

from bittrade_feed.config import Config
from bittrade_feed.models import SIMULATED_SOURCE, FeedStatus, Tick
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER
from tests.daemon import PAIR
from tests.streamutil import events

NAMES = st.sampled_from(("kraken", "bitfinex", "coinbase", SIMULATED_SOURCE))


@given(st.lists(NAMES, min_size=1, max_size=4, unique=True))
def test_every_price_carries_the_flag_true_iff_the_simulated_source_is_in_it(
    sources: list[str],
) -> None:
    """The flag is always present, and true exactly when the simulated source went in."""
    wire = Tick(1, PAIR, Decimal("1.5"), 0, tuple(sorted(sources))).to_json()
    assert wire["simulated"] is (SIMULATED_SOURCE in sources)


def test_status_carries_the_flag_false_by_default() -> None:
    """A status built without the flag says false, explicitly."""
    assert FeedStatus(PAIR, "live", 0, "price updated").to_json()["simulated"] is False


async def test_simulated_feed_flags_stream_and_rest(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """On the simulated source: the opening status, each price, and REST all say so."""
    feed = {"sources": {PAIR: [SIMULATED_SOURCE]}}
    client = await aiohttp_client(
        create_app(daemon_config((SIMULATED_SOURCE,), feed=feed), fetch=False)
    )
    async with client.get("/api/price-stream") as resp:
        opening = await events(resp, 1)  # retry + "no price yet", in one block
        await client.app[FETCHER].run_cycle()
        live = await events(resp, 2)  # the first price, then "live"
    assert [(e, d["simulated"]) for _, e, d in opening + live] == [
        ("status", True),
        ("price", True),
        ("status", True),
    ]
    price = await (await client.get("/api/price")).json()
    assert price["simulated"] is True
    history = await (await client.get("/api/prices")).json()
    assert [p["simulated"] for p in history["prices"]] == [True]


async def test_real_sources_say_not_simulated(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """Real exchanges: the flag is there and false, in the stream and on REST."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    await client.app[FETCHER].run_cycle()
    async with client.get("/api/price-stream") as resp:
        got = await events(resp, 2)  # retry + the latest price, its status
    assert [(e, d["simulated"]) for _, e, d in got] == [("price", False), ("status", False)]
    assert (await (await client.get("/api/price")).json())["simulated"] is False
