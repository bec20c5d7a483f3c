"""A small in-memory stand-in for the tick log and store replica seam (tests only).

It follows the contract of ``TickLog.apply`` and ``Store.record_hole``/``history_floor``
so the cluster package can be tested in-process without the daemon.
"""

from __future__ import annotations

from bittrade_feed.errors import StoreError
from bittrade_feed.models import Tick


class Conflict(StoreError):
    """Another payload is stored under this id."""


class MemoryLog:
    """Ticks by id, the listener order, and the holes recorded."""

    def __init__(self) -> None:
        self.ticks: dict[int, Tick] = {}
        self.seen: list[Tick] = []
        self.holes: list[tuple[int, int]] = []
        self.history_floor = 0

    async def apply(self, tick: Tick) -> bool:
        """Insert under the given id; same payload again is a no-op, another one an error."""
        old = self.ticks.get(tick.id)
        if old is not None:
            if old != tick:
                raise Conflict(f"id {tick.id}: stored {old}, offered {tick}")
            return False
        self.ticks[tick.id] = tick
        self.seen.append(tick)
        return True

    async def max_id(self) -> int:
        """The highest id stored or skipped."""
        return max([0, *self.ticks, *(hi for _, hi in self.holes)])

    async def record_hole(self, lo: int, hi: int) -> None:
        """Ids ``lo..hi`` will never be here."""
        self.holes.append((lo, hi))
        self.history_floor = max(self.history_floor, hi)
