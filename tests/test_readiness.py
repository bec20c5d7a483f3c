"""Readiness, metrics and resumes against a writer that is probed, fails or is stuck."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB
from tests.daemon import PAIR
from tests.fakeclock import FakeClock
from tests.streamutil import parse
from tests.test_store import refuse_writes


def stored(path: Path) -> dict[int, tuple[str, str]]:
    """(pair, price) of every stored tick by id, read with a fresh connection."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        return {i: (p, v) for i, p, v in con.execute("SELECT id, pair, price FROM ticks")}


async def read_prices(resp: aiohttp.ClientResponse, seen: list[tuple[int, str, str]]) -> None:
    """Append (id, pair, price) of every price event of an SSE stream to ``seen``, for ever."""
    while True:
        ident, event, data = parse(await resp.content.readuntil(b"\n\n"))
        if event == "price":
            seen.append((int(ident), data["pair"], data["price"]))


def assert_all_committed(seen: list[tuple[int, str, str]], path: Path) -> None:
    """Every id a subscriber saw is in SQLite with that pair and price; no id carries two."""
    rows = stored(path)
    prices: dict[int, set[str]] = {}
    for ident, _, price in seen:
        prices.setdefault(ident, set()).add(price)
    assert {i: p for i, p in prices.items() if len(p) > 1} == {}, "one id, several prices"
    assert [s for s in seen if rows.get(s[0]) != (s[1], s[2])] == [], "seen but not committed"
    ids = [s[0] for s in seen]
    assert ids == sorted(set(ids))


async def probe(client: TestClient[Any, Any], rng: random.Random) -> None:
    """Ask /readyz; sometimes give up mid-request, so the server cancels the handler."""
    give_up = rng.random() < 0.5
    timeout = aiohttp.ClientTimeout(total=rng.uniform(0.0005, 0.004) if give_up else 10)
    with contextlib.suppress(TimeoutError):
        async with client.get("/readyz", timeout=timeout) as resp:
            await resp.read()


@pytest.mark.parametrize("seed", range(6))
async def test_probes_never_share_or_hold_the_writers_transaction(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], seed: int
) -> None:
    """Fast ticks with concurrent and cancelled /readyz probes: every id seen is committed."""
    rng = random.Random(seed)
    config = daemon_config(("simulated",))
    client = await aiohttp_client(create_app(config, fetch=False))
    fetcher = client.app[FETCHER]
    seen: list[tuple[int, str, str]] = []
    async with client.get("/api/price-stream") as resp:
        reader = asyncio.create_task(read_prices(resp, seen))
        probers: list[asyncio.Task[None]] = []
        for _ in range(60):
            probers += [asyncio.create_task(probe(client, rng)) for _ in range(rng.randint(0, 3))]
            await asyncio.sleep(rng.uniform(0, 0.004))
            await fetcher.run_cycle()
            await asyncio.sleep(rng.uniform(0, 0.02))  # ~0.01 s interval on average
        await asyncio.gather(*probers)
        last = client.app[HUB].max_id
        async with asyncio.timeout(10):
            while not seen or seen[-1][0] < last:
                await asyncio.sleep(0.01)
        reader.cancel()
    assert len(seen) == 60
    assert_all_committed(seen, config.database.path)
    assert (await client.get("/readyz")).status == 200


def metric(client: TestClient[Any, Any], name: str) -> float | None:
    """The current value of an unlabelled series (after a scrape has refreshed the gauges)."""
    return client.app[FETCHER].metrics.registry.get_sample_value(name)


async def test_failing_writer_is_stale_503_counted_and_logged_once(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """While every commit fails: nothing uncommitted streams, 503 names the database, one log
    line plus a summary a minute (not one per tick), the metrics show it; then it recovers."""
    config = daemon_config(feed={"stale_after": 5.0})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    fetcher = client.app[FETCHER]
    seen: list[tuple[int, str, str]] = []
    async with client.get("/api/price-stream") as resp:
        reader = asyncio.create_task(read_prices(resp, seen))
        await fetcher.run_cycle()
        heal = refuse_writes(config.database.path, "full")
        with capture_logs() as logs:
            for _ in range(70):
                await clock.advance(1)
                await fetcher.run_cycle()
            ready = await client.get("/readyz")
            body = await ready.json()
            await client.get("/metrics")
            writable, errors = (
                metric(client, "bittrade_feed_store_writable"),
                metric(client, "bittrade_feed_store_write_errors_total"),
            )
            heal()
            await clock.advance(1)
            await fetcher.run_cycle()
        recovered = await client.get("/readyz")
        await client.get("/metrics")
        async with asyncio.timeout(5):
            while len(seen) < 2:
                await asyncio.sleep(0.01)
        reader.cancel()
    assert ready.status == 503
    assert body["checks"]["database"] == {
        "ok": False,
        "detail": "database is not writable: cannot store BTC-USDT price: full",
    }
    assert body["checks"][f"price:{PAIR}"]["ok"] is False
    assert (writable, errors) == (0, 70)
    store_lines = [e for e in logs if e["event"].startswith("store")]
    assert [e["event"] for e in store_lines] == [
        "store failed",
        "store failed: still failing",
        "store recovered",
    ]
    assert store_lines[1]["failed"] == 60
    assert fetcher.pairs[PAIR].status.state == "live"
    assert recovered.status == 200
    assert metric(client, "bittrade_feed_store_writable") == 1
    assert [s[0] for s in seen] == [1, 2]
    assert_all_committed(seen, config.database.path)


async def test_stuck_writer_blocks_neither_readyz_nor_metrics_nor_resume(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """With the write lock held elsewhere, probes, scrapes and resumes from SQLite still answer."""
    pairs = ["BTC-USD", "ETH-USD"]
    config = daemon_config(
        ("simulated",),
        database={"timeout": 3.0},
        feed={"pairs": pairs, "sources": {p: ["simulated"] for p in pairs}},
        stream={"replay_limit": 4},
    )
    client = await aiohttp_client(create_app(config, fetch=False))
    fetcher = client.app[FETCHER]
    for _ in range(5):
        await fetcher.run_cycle()
    rows = stored(config.database.path)
    # The ring keeps ids 7 to 10, so a resume from id 2 must read SQLite.
    missed = [str(i) for i, (pair, _) in sorted(rows.items()) if pair == "BTC-USD" and i > 2]
    with contextlib.closing(sqlite3.connect(config.database.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        cycle = asyncio.create_task(fetcher.run_cycle())
        await asyncio.sleep(0.2)  # the commits are now waiting for the lock
        ready = await client.get("/readyz")
        scrape = await client.get("/metrics")
        params = {"last_event_id": "2", "pairs": "BTC-USD"}
        async with client.get("/api/price-stream", params=params) as resp:
            replay = [parse(await resp.content.readuntil(b"\n\n")) for _ in range(5)]
        assert not cycle.done(), "a probe waited for the stuck write"
        await cycle
        during = await client.get("/readyz")
        other.rollback()
    await fetcher.run_cycle()
    after = await client.get("/readyz")
    assert (ready.status, scrape.status) == (200, 200)
    assert [r[0] for r in replay if r[1] == "price"] == missed
    assert replay[-1][1] == "status"
    assert during.status == 503
    detail = (await during.json())["checks"]["database"]["detail"]
    assert detail.startswith("database is not writable: ")
    assert after.status == 200
    assert sorted(stored(config.database.path)) == list(range(1, 13))
