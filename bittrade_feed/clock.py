"""Time as an injected object, so loops and timeouts are testable without sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What the daemon needs to know about time."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for timestamps)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for scheduling)."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for ``seconds``."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """The event loop's monotonic clock."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))
