"""When the fetch loop runs: fixed slots on the monotonic clock, re-planned on reload.

Interval k starts at ``start + k * interval`` (no drift); a late cycle is followed at
once by the next, and only slots missed by a whole interval are skipped. A reload wakes
the sleeping loop, which re-plans its next slot on the new interval instead of sleeping
out the old one. Each plan is also a promise (``progress_deadline``): the next cycle
will have ended by then, which the watchdog checks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import structlog

from bittrade_feed.clock import Clock
from bittrade_feed.config import FetchConfig

log = structlog.get_logger("bittrade_feed.feed.schedule")


class Schedule:
    """The fetch loop's slots, its wake-up on reload, and the progress it promises."""

    def __init__(self, clock: Clock, fetch: Callable[[], FetchConfig]) -> None:
        self.clock = clock
        self.fetch = fetch
        self.progress_since: float | None = None
        """When (monotonic) the loop last made progress: a cycle ended or it re-planned."""
        self.progress_deadline: float | None = None
        """By when (monotonic) the next cycle must end if the loop is healthy."""
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """The config changed: a loop asleep on the old interval wakes and re-plans."""
        self._changed.set()

    def start(self) -> float:
        """The first slot, now; the first cycle gets as long as a whole plan."""
        now = self.clock.monotonic()
        self._promise(now, 2 * self.fetch().interval)
        return now

    async def next_slot(self, slot: float) -> float:
        """Sleep until the slot after ``slot`` (on the interval in force) and return it."""
        replanned = False
        while True:
            self._changed.clear()
            interval = self.fetch().interval
            next_at = slot + interval
            now = self.clock.monotonic()
            missed = math.floor((now - next_at) / interval) if now > next_at else 0
            if missed and not replanned:
                log.warning("fetch cycle overran", missed_intervals=missed)
            next_at += missed * interval
            # The next cycle starts within an interval and takes at most another one.
            self._promise(now, 2 * interval)
            if not await self._sleep_unless_changed(next_at - now):
                return next_at
            replanned = True

    async def _sleep_unless_changed(self, seconds: float) -> bool:
        """Sleep ``seconds``; ``True`` if a reconfigure cut the sleep short."""
        if seconds <= 0:
            return False
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleep, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            changed.cancel()
        return changed.done() and not changed.cancelled()

    def _promise(self, now: float, within: float) -> None:
        self.progress_since = now
        self.progress_deadline = now + within + self.fetch().request_timeout
