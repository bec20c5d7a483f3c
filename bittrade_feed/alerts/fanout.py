"""One daemon's alert fan-out: committed firings to the hub, read back in id order.

Firings are published from the store, not from whoever committed them: the engine and a
test firing through the API commit on the same writer lane, so ids grow in commit order,
and a read of the firings above the last one published sees a prefix of them. Publishing
that prefix keeps the hub's promise (firings in id order, so ``latest`` is exact) even
when two committers' continuations run in the other order, and a commit whose caller
gave up (a timeout that still committed) is published too. A cluster does the same from
the ``fired`` stream in Redis (``cluster.alerts``).
"""

from __future__ import annotations

import asyncio

import structlog

from bittrade_feed.alerts.store import AlertStore
from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.clock import Clock
from bittrade_feed.errors import StoreError

log = structlog.get_logger("bittrade_feed.alerts.fanout")

PAGE = 500
"""Firings read per query."""
RETRY_S = 0.5
"""Seconds before a failed read is tried again."""


class FanOut:
    """Publishes every firing above ``after``, oldest first; ``poke`` after a commit."""

    def __init__(self, alerts: AlertStore, hub: Hub, clock: Clock, after: int) -> None:
        self._alerts = alerts
        self._hub = hub
        self._clock = clock
        self._after = after
        self._wake = asyncio.Event()
        self._wake.set()  # firings committed before the task started

    @property
    def published(self) -> int:
        """The highest firing id handed to the hub."""
        return self._after

    def poke(self) -> None:
        """A firing was committed: read now."""
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled (a supervised task: it resumes from ``published``)."""
        while True:
            await self._wake.wait()
            # Cleared before the read: a commit (and its poke) during it is read next.
            self._wake.clear()
            try:
                page = await self._alerts.fired_after(self._after, PAGE)
            except StoreError as exc:
                log.error("alerts cannot read firings for the streams", reason=str(exc))
                await self._clock.sleep(RETRY_S)
                self._wake.set()
                continue
            for owner, firing in page:
                self._hub.publish_alert(owner, firing)
                self._after = firing.id
            if len(page) == PAGE:
                self._wake.set()
