"""The stall policy and the loop that reports to systemd: STATUS always, WATCHDOG=1 on progress.

The fetch loop promises, each time it plans its next slot, by when that next cycle will
have ended (``progress_deadline``); a reload that changes the interval re-plans and so
re-promises. The loop is stalled once that promise is broken, and only then is the
watchdog ping withheld, so ``WatchdogSec=`` fires for a wedged loop and never for a
loop that is merely sleeping on a long interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from bittrade_feed.ops import systemd

log = structlog.get_logger("bittrade_feed.ops.watchdog")

STATUS_PERIOD = 5.0
"""Seconds between ``STATUS=`` updates (and the stall check) when no watchdog is asked for."""


class Progress(Protocol):
    """What the fetch loop says about its own progress (monotonic seconds)."""

    @property
    def progress_since(self) -> float | None: ...  # noqa: D102
    @property
    def progress_deadline(self) -> float | None: ...  # noqa: D102


class Watchdog:
    """Decides whether the fetch loop is stalled and tells systemd, periodically."""

    def __init__(
        self,
        progress: Callable[[], Progress],
        monotonic: Callable[[], float],
        status: Callable[[], str],
    ) -> None:
        self.progress = progress
        self.monotonic = monotonic
        self.status = status
        self.is_ready = False
        """Whether READY=1 has been sent (STATUS lines only follow it)."""

    def stalled_for(self) -> float | None:
        """Seconds since the loop last made progress, once it is past the deadline it set."""
        progress = self.progress()
        deadline, since = progress.progress_deadline, progress.progress_since
        if deadline is None or since is None:
            return None  # not started: the first-cycle wait bounds start-up instead
        now = self.monotonic()
        return now - since if now > deadline else None

    async def run(self) -> None:
        """Send STATUS periodically, and WATCHDOG=1 at half ``WatchdogSec`` while not stalled."""
        watchdog = systemd.watchdog_interval()
        period = min(STATUS_PERIOD, watchdog / 2) if watchdog else STATUS_PERIOD
        was_stalled = False
        while True:
            stalled = self.stalled_for()
            if (stalled is not None) != was_stalled:
                was_stalled = stalled is not None
                if was_stalled:
                    log.error(
                        "fetch loop stalled: no cycle finished in time"
                        + (", withholding the watchdog ping" if watchdog else ""),
                        stalled_s=round(stalled or 0.0, 1),
                    )
                else:
                    log.info("fetch loop progressing again")
            message = [f"STATUS={self.status()}"] if self.is_ready else []
            if watchdog and not was_stalled:
                message.append("WATCHDOG=1")
            if message:
                systemd.notify(*message)
            await asyncio.sleep(period)
