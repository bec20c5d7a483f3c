"""The whole tick path at once, over many seeded schedules: the stream promise holds.

Several pairs tick as fast as the loop allows while, concurrently and in a seeded random
order, SSE subscribers of random pair sets come and go and resume with their
Last-Event-ID (often from SQLite, the ring being small), readiness probes run (some
abandoned mid-request, so the server cancels them), retention deletes old rows, and the
config is reloaded (a pair removed and added back, the interval changed). Afterwards, for
every connection: ids strictly increase, every gap is preceded by a ``resync``, and every
id seen is in SQLite with the same payload (``tests.streamcheck.check_stream``).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient

from bittrade_feed.config import load_config
from bittrade_feed.models import parse_ts
from bittrade_feed.server.app import create_app
from bittrade_feed.server.reload import reload_config
from bittrade_feed.server.state import FETCHER, STORE
from tests.streamcheck import Received, check_stream, stored_ticks
from tests.streamutil import parse

PAIRS = ("BTC-USD", "ETH-USD", "SOL-USD")
SEEDS = range(10)
CYCLES = 60


def config_text(db: Path, pairs: tuple[str, ...], interval: float, coalesce_ms: int) -> str:
    """A daemon on the simulated source: no network, a price every cycle for every pair."""
    sources = "\n".join(f'"{p}" = ["simulated"]' for p in pairs)
    listed = ", ".join(f'"{p}"' for p in pairs)
    return f"""
[database]
path = "{db}"
[feed]
pairs = [{listed}]
interval = {interval}
[feed.sources]
{sources}
[aggregation]
quorum = 1
jump_guard = 0
[stream]
replay_limit = 12
coalesce_ms = {coalesce_ms}
[exchanges.simulated]
seed = 7
volatility = 0.001
[log]
level = "error"
"""


class Run:
    """One seeded schedule: the app, its config file, and what every connection received."""

    def __init__(
        self,
        client: TestClient[Any, Any],
        db: Path,
        conf: Path,
        rng: random.Random,
        coalesce_ms: int,
    ) -> None:
        self.client = client
        self.db = db
        self.conf = conf
        self.rng = rng
        self.coalesce_ms = coalesce_ms
        self.done = asyncio.Event()
        self.connections: list[tuple[tuple[str, ...], int | None, list[Received]]] = []
        self.seen_in_sqlite: dict[int, dict[str, Any]] = {}

    async def snapshot(self) -> None:
        """Fold what SQLite holds now into everything it has held (one payload per id)."""
        for ident, payload in (await stored_ticks(self.db)).items():
            before = self.seen_in_sqlite.setdefault(ident, payload)
            assert before == payload, f"id {ident} held {before}, then {payload}"

    async def ticker(self) -> None:
        fetcher = self.client.app[FETCHER]
        for _ in range(CYCLES):
            await fetcher.run_cycle()
            await asyncio.sleep(self.rng.choice((0, 0, 0.001, 0.004)))
        self.done.set()

    async def subscriber(self) -> None:
        """Connect, read a while, drop, resume from the last id seen; until the run ends."""
        resume: int | None = None
        pairs = tuple(p for p in PAIRS if self.rng.random() < 0.7) or PAIRS[:1]
        while not self.done.is_set():
            got: list[Received] = []
            self.connections.append((pairs, resume, got))
            headers = {} if resume is None else {"Last-Event-ID": str(resume)}
            params = {"pairs": ",".join(pairs)}
            try:
                async with self.client.get(
                    "/api/price-stream", params=params, headers=headers
                ) as resp:
                    if resp.status != 200:  # every pair removed by a reload just now
                        await asyncio.sleep(0.005)
                        continue
                    deadline = asyncio.get_running_loop().time() + self.rng.uniform(0.01, 0.2)
                    while asyncio.get_running_loop().time() < deadline:
                        left = deadline - asyncio.get_running_loop().time()
                        try:
                            frame = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), left)
                        except (TimeoutError, asyncio.IncompleteReadError):
                            break
                        event = parse(frame)
                        got.append(event)
                        if event[1] in ("price", "resync") and event[0]:
                            resume = int(event[0])
            except aiohttp.ClientPayloadError:
                pass  # the stream was closed by the daemon (pair removed): resume
            await asyncio.sleep(self.rng.choice((0, 0.002, 0.02)))

    async def prober(self) -> None:
        while not self.done.is_set():
            timeout = aiohttp.ClientTimeout(total=self.rng.choice((0.0005, 0.002, 1.0)))
            try:
                async with self.client.get("/readyz", timeout=timeout) as resp:
                    assert resp.status in (200, 503)
                    await resp.read()
            except TimeoutError:
                pass  # abandoned: the server cancels the handler mid-request
            await asyncio.sleep(self.rng.uniform(0, 0.01))

    async def retention(self) -> None:
        store = self.client.app[STORE]
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(0.02, 0.1))
            # SQLite's contents are recorded before rows go, so the check knows every
            # tick that was ever committed, deleted or not.
            await self.snapshot()
            if self.seen_in_sqlite:
                newest = self.seen_in_sqlite[max(self.seen_in_sqlite)]
                cutoff = parse_ts(newest["ts"]) - self.rng.choice((0, 5, 50))
                await store.delete_older_than(cutoff)

    async def reloads(self) -> None:
        """Reload the config file: a pair removed and added back, the interval changed."""
        while not self.done.is_set():
            await asyncio.sleep(self.rng.uniform(0.05, 0.15))
            pairs = PAIRS if self.rng.random() < 0.5 else PAIRS[:2]
            interval = self.rng.choice((0.01, 0.05, 1.0))
            self.conf.write_text(config_text(self.db, pairs, interval, self.coalesce_ms))
            _, error = await reload_config(self.client.app, self.conf)
            assert error is None


@pytest.mark.parametrize("seed", SEEDS)
async def test_every_subscriber_gets_ordered_committed_prices_without_silent_gaps(
    aiohttp_client: AiohttpClient, tmp_path: Path, seed: int
) -> None:
    """Fast ticks, resumes, cancelled probes, retention, reloads and coalescing at once."""
    rng = random.Random(seed)
    db = tmp_path / "feed.sqlite3"
    conf = tmp_path / "feed.toml"
    coalesce_ms = rng.choice((0, 0, 5))
    conf.write_text(config_text(db, PAIRS, 0.01, coalesce_ms))
    client = await aiohttp_client(create_app(load_config(conf), fetch=False))
    run = Run(client, db, conf, rng, coalesce_ms)
    tasks = [run.ticker(), run.prober(), run.prober(), run.retention(), run.reloads()]
    tasks += [run.subscriber() for _ in range(4)]
    async with asyncio.timeout(60):
        await asyncio.gather(*tasks)
    await run.snapshot()
    assert len(run.seen_in_sqlite) >= CYCLES, "the run published prices"
    resumed = 0
    for pairs, resume_from, got in run.connections:
        check_stream(got, run.seen_in_sqlite, pairs, resume_from)
        resumed += resume_from is not None
    assert resumed >= 4, "the schedule exercised resumes"
