"""A client that moves to a daemon whose follower has not yet applied its Last-Event-ID.

Two daemons in this process on one real Redis: ``a`` leads, ``c`` follows. The test holds
``c``'s follower (its commits wait on a gate), reads ``a`` past ``c``'s newest id, then
resumes on ``c``: it waits for its log (up to ``ClusterNode.resume_wait``) and replays,
or, if the log does not arrive in time, answers ``resync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bittrade_feed.config import Config
from bittrade_feed.models import Tick
from bittrade_feed.server.app import create_app
from bittrade_feed.server.cluster import CLUSTER
from bittrade_feed.server.state import HUB, METRICS
from tests.cluster.nodes import INTERVAL, LEASE_MS, until
from tests.cluster.redisproc import RedisServer
from tests.daemon import PAIR
from tests.streamcheck import check_stream, stored_ticks
from tests.streamutil import events

AiohttpClient = Callable[..., Any]


class Gate:
    """The follower's tick log behind a gate: while it is held, the follower stalls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._open = asyncio.Event()
        self._open.set()

    async def apply(self, tick: Tick) -> bool:
        await self._open.wait()
        result: bool = await self.inner.apply(tick)
        return result

    async def hold(self) -> None:
        """Stop commits; a commit already past the gate finishes first."""
        self._open.clear()
        await asyncio.sleep(0.1)

    def open(self) -> None:
        self._open.set()


def config(build: Callable[..., Config], tmp: Path, url: str, name: str) -> Config:
    return build(
        feed={"interval": INTERVAL, "request_timeout": 0.1},
        cluster={"redis_url": url, "node_name": name, "lease_ms": LEASE_MS},
        database={"path": str(tmp / f"{name}.sqlite3")},
    )


@contextlib.asynccontextmanager
async def pair_of_daemons(
    aiohttp_client: AiohttpClient, build: Callable[..., Config], tmp: Path, url: str
) -> AsyncIterator[tuple[TestClient, TestClient, Gate]]:
    """``a`` leading, ``c`` following with its commits behind a gate (open at first)."""
    a = await aiohttp_client(create_app(config(build, tmp, url, "a")))
    await until(a.app[CLUSTER].lease.leading, 5, "a to lead")
    c = await aiohttp_client(create_app(config(build, tmp, url, "c"), fetch=False))
    follower = c.app[CLUSTER].follower
    gate = Gate(follower.ticklog)
    follower.ticklog = gate
    await until(lambda: c.app[HUB].max_id >= a.app[HUB].max_id > 0, 5, "c to follow")
    yield a, c, gate
    gate.open()


async def read_past(client: TestClient, ident: int) -> int:
    """Open a stream and read until a price id above ``ident``; the last id read."""
    resp = await client.get("/api/price-stream")
    try:
        while True:
            for raw, event, _ in await events(resp, 1):
                if event == "price" and int(raw) > ident:
                    return int(raw)
    finally:
        resp.close()


async def until_price(resp: ClientResponse, ident: int, got: list[tuple[Any, ...]]) -> None:
    """Read ``resp`` into ``got`` until a price id at or above ``ident`` (or a resync)."""
    while True:
        (one,) = await events(resp, 1)
        got.append(one)
        if one[1] == "resync" or (one[1] == "price" and int(one[0]) >= ident):
            return


def waits(c: TestClient, outcome: str) -> float:
    value = c.app[METRICS].registry.get_sample_value(
        "bittrade_feed_resume_waits_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_resume_ahead_of_the_follower_waits_then_replays(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Held behind, then released within the wait: no resync, no gap, no duplicate."""
    async with pair_of_daemons(aiohttp_client, daemon_config, tmp_path, redis_server.url) as (
        a,
        c,
        gate,
    ):
        await gate.hold()
        behind = c.app[HUB].max_id
        last = await read_past(a, behind + 1)
        assert c.app[HUB].max_id == behind < last  # the resume point is ahead of c
        resp = await c.get("/api/price-stream", headers={"Last-Event-ID": str(last)})
        await asyncio.sleep(0.2)
        # Only that connection waits: a new subscriber on c gets its snapshot at once.
        other = await c.get("/api/price-stream")
        snapshot = [e for e in await events(other, 1, timeout=0.5) if e[1] == "price"]
        assert snapshot and int(snapshot[0][0]) <= behind
        # The waiting resume holds its one slot, like any opening: no extra accounting.
        assert c.app[HUB].admitted == c.app[HUB].count == 2
        other.close()
        gate.open()
        got: list[tuple[Any, ...]] = []
        await until_price(resp, last + 3, got)
        resp.close()
    assert not [e for e in got if e[1] == "resync"], got
    ids = check_stream(got, await stored_ticks(tmp_path / "c.sqlite3"), [PAIR], last)
    assert ids == list(range(last + 1, last + 1 + len(ids)))
    assert waits(c, "caught_up") == 1 and waits(c, "late") == 0


async def test_resume_ahead_of_a_follower_that_stays_behind_gets_resync(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Held past the wait: one resync (ahead), after about ``resume_wait``, then live."""
    async with pair_of_daemons(aiohttp_client, daemon_config, tmp_path, redis_server.url) as (
        a,
        c,
        gate,
    ):
        wait = c.app[CLUSTER].resume_wait
        assert wait == min(2.0, LEASE_MS / 1000)
        await gate.hold()
        behind = c.app[HUB].max_id
        last = await read_past(a, behind + 1)
        started = time.monotonic()
        resp = await c.get("/api/price-stream", headers={"Last-Event-ID": str(last)})
        got: list[tuple[Any, ...]] = []
        await until_price(resp, last + 1, got)
        took = time.monotonic() - started
        gate.open()
        resp.close()
    assert [e[1] for e in got if e[1] in ("price", "resync")] == ["resync"]
    assert "ahead" in got[-1][2]["reason"]
    assert wait * 0.9 <= took < wait + 1.0
    assert waits(c, "late") == 1
