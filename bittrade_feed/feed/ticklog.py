"""The tick log: a price becomes a committed, ordered event, handed on exactly once.

One writer: ``append`` and ``apply`` run one at a time, so commit order is hand-on
order. The log remembers the last id it handed on, and every write reads back, inside
its own transaction, whatever is committed above that id. A write that timed out or
failed with an unknown outcome therefore needs no special path: if it did commit, the
next write hands its tick on, in order; if it did not, nothing was handed on. Only rows
read back from SQLite are handed on, so nothing uncommitted ever reaches a listener.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from bittrade_feed.clock import Clock
from bittrade_feed.errors import StoreError, StoreRejected, StoreTimeout
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.ops.metrics import Metrics
from bittrade_feed.store.sqlite import Store

log = structlog.get_logger("bittrade_feed.feed.ticklog")

Listener = Callable[[Tick], None]

SUMMARY_PERIOD = 60.0
"""Seconds between two log lines about the same ongoing failure."""


@dataclass(slots=True)
class Incident:
    """Rate-limits the log lines of one kind of failure: the first, then a summary a period."""

    event: str
    period: float = SUMMARY_PERIOD
    failures: int = 0
    """Failures since this incident began (0: none ongoing)."""
    _unreported: int = 0
    _reported_at: float = 0.0
    _last_at: float = field(default=0.0)

    def failed(self, now: float, **fields: object) -> None:
        """Count one failure; log the first at once, later ones as a periodic summary."""
        if self.failures and now - self._last_at > self.period:
            self.failures = 0  # quiet for a whole period: a new incident
        self._last_at = now
        self.failures += 1
        if self.failures == 1:
            self._reported_at, self._unreported = now, 0
            log.error(self.event, **fields)
            return
        self._unreported += 1
        if now - self._reported_at >= self.period:
            log.error(
                f"{self.event}: still failing",
                failed=self._unreported,
                seconds=round(now - self._reported_at),
                **fields,
            )
            self._reported_at, self._unreported = now, 0

    def recovered(self, now: float, message: str) -> None:
        """End the incident with one line, if there was one."""
        if self.failures:
            log.info(message, failed=self.failures, seconds=round(now - self._last_at, 3))
            self.failures = 0


class TickLog:
    """Commits ticks to the store and hands each committed one to every listener, in order."""

    def __init__(self, store: Store, metrics: Metrics, clock: Clock, last_id: int) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._last_id = last_id
        self._lock = asyncio.Lock()
        self._listeners: list[tuple[str, Listener, Incident]] = []
        self._store_incident = Incident("store failed")

    @property
    def last_id(self) -> int:
        """The id of the last tick handed on (at start: the highest id in the store)."""
        return self._last_id

    def add_listener(self, on_tick: Listener, *, name: str | None = None) -> None:
        """Call ``on_tick`` with every tick committed from now on, in id order, once each."""
        label = name or str(getattr(on_tick, "__qualname__", repr(on_tick)))
        self._metrics.tick_listener_errors.labels(label)
        self._listeners.append((label, on_tick, Incident(f"tick listener {label} failed")))

    async def append(self, draft: TickDraft) -> Tick:
        """Commit a locally made price under the next id and hand it on; ``StoreError`` if not."""
        ticks = await self._write(lambda after: self._store.append(draft, after))
        return ticks[-1]

    async def apply(self, tick: Tick) -> bool:
        """Commit a tick whose id was assigned elsewhere; ``False`` if it was already stored.

        ``StoreConflict`` if the id is stored with another payload, ``StoreOutOfOrder`` if it
        is new but not above ``last_id``.
        """
        stored = False

        async def op(after: int) -> list[Tick]:
            nonlocal stored
            stored, ticks = await self._store.apply(tick, after)
            return ticks

        await self._write(op)
        return stored

    async def _write(self, op: Callable[[int], Awaitable[list[Tick]]]) -> list[Tick]:
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self._store.timeout):
                    await self._lock.acquire()
            except TimeoutError:
                raise StoreTimeout(
                    f"the previous write still holds the tick log after {self._store.timeout:g} s"
                ) from None
            try:
                ticks = await op(self._last_id)
                self._hand_on(ticks)
            finally:
                self._lock.release()
        except StoreRejected:
            raise  # the database works; this tick was refused (conflict, out of order)
        except StoreError as exc:
            self._metrics.store_write_errors.inc()
            self._store_incident.failed(self._clock.monotonic(), reason=str(exc))
            raise
        finally:
            self._metrics.store_write_duration.observe(time.perf_counter() - started)
        self._store_incident.recovered(self._clock.monotonic(), "store recovered")
        return ticks

    def _hand_on(self, ticks: list[Tick]) -> None:
        for tick in ticks:
            if tick.id <= self._last_id:
                continue
            self._last_id = tick.id
            for label, listener, incident in self._listeners:
                try:
                    listener(tick)
                except Exception as exc:  # one listener must not stop the others
                    self._metrics.tick_listener_errors.labels(label).inc()
                    incident.failed(
                        self._clock.monotonic(),
                        tick_id=tick.id,
                        error=f"{type(exc).__name__}: {exc}",
                    )
