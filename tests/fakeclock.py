"""A clock the tests move by hand, so nothing waits for real time to pass."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """Implements ``bittrade_feed.clock.Clock``; time moves only on ``advance``."""

    def __init__(self, wall: float = 1_763_900_000.0) -> None:
        self._wall = wall
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def set_time(self, wall: float) -> None:
        """Jump the wall clock (the monotonic clock is untouched)."""
        self._wall = wall

    def jump(self, seconds: float) -> None:
        """Move both clocks forward without waking anyone (time spent inside a call)."""
        self._step_to(self._mono + seconds)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for *_, fut in self._sleepers if not fut.done())

    async def advance(self, seconds: float) -> None:
        """Move both clocks forward, waking each sleeper in order and letting it run."""
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._step_to(when)
            if not fut.done():
                fut.set_result(None)
            await settle()
        self._step_to(target)
        await settle()

    def _step_to(self, when: float) -> None:
        if when > self._mono:
            self._wall += when - self._mono
            self._mono = when


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(rounds):
        await asyncio.sleep(0)
