"""A Fetcher on fake exchanges with a list sink and a fake clock, for the fetch-loop tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bittrade_feed.config import Config
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import FeedStatus, Tick, TickDraft
from bittrade_feed.ops.metrics import Metrics, new_registry
from tests.fakeclock import FakeClock


class Harness:
    """A Fetcher wired to a list sink, with helpers to drive it."""

    def __init__(self, fetcher: Fetcher, clock: FakeClock) -> None:
        self.fetcher = fetcher
        self.clock = clock
        self.ticks: list[Tick] = []
        self.statuses: list[FeedStatus] = []

    def sample(self, name: str, **labels: str) -> float | None:
        return self.fetcher.metrics.registry.get_sample_value(name, labels)

    async def cycle(self) -> None:
        """Run one cycle to the end, moving fake time while it waits on the clock."""
        task = asyncio.ensure_future(self.fetcher.run_cycle())
        while not task.done():
            await self.clock.advance(0.25)
            await asyncio.sleep(0.005)
        await task


@pytest.fixture
async def harness(
    daemon_config: Callable[..., Config], clock: FakeClock
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def build(
        sources: tuple[str, ...] = ("kraken", "bitfinex"),
        last_ticks: dict[str, Tick] | None = None,
        **sections: Any,
    ) -> Harness:
        session = aiohttp.ClientSession()
        sessions.append(session)
        box: list[Harness] = []

        async def sink(draft: TickDraft) -> Tick:
            h = box[0]
            tick = Tick(len(h.ticks) + 1, draft.pair, draft.price, draft.ts_ms, draft.sources)
            h.ticks.append(tick)
            return tick

        def on_status(status: FeedStatus) -> None:
            box[0].statuses.append(status)

        config = daemon_config(sources, **sections)
        fetcher = Fetcher(
            config, session, clock, Metrics(new_registry()), sink, on_status, last_ticks
        )
        box.append(Harness(fetcher, clock))
        return box[0]

    yield build
    for session in sessions:
        await session.close()
