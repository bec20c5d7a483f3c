"""Alert events on the streams: each firing to every stream of its owner, resumable by id.

A firing is encoded once per wire format and the same bytes go to ``transport.write`` of
each subscriber of its owner (``Registry.by_owner``), as prices are: no per-subscriber
task or queue. An ``alert`` event carries no SSE ``id:`` line, so the price resume point
(Last-Event-ID) never moves; its resume point is the firing id (``alerts_after``).

Each subscriber has an alert cursor (``alert_id``, the highest firing id written to it):
only firings above it are written, so per stream they go out in increasing id and at most
once. A new subscriber holds live firings (``alert_held``) from its registration, before
any await, until its price opening is written and, with ``alerts_after``, the stored
firings above it are read from the source in pages and written; then the held ones above
the last written follow. A firing committed before the read is in the pages, one committed
after is held: no gap, no duplicate, by construction.

Then the stream gets one ``alerts`` event, ``{"after": N}``: every firing of its owner with
an id up to N has been written to it or was published before it opened, so a client that
reconnects with ``alerts_after=N`` misses nothing, even if no alert had reached it yet. N
is the highest of its cursor and ``latest``, the highest firing id that exists (told by
``Hub.set_alert_source`` or ``Hub.alerts_known``, then raised by each publish): firings
are published in id order, so any firing above ``latest`` is still to be published, and
will be held or written. It is not sent while ``latest`` is unknown (a cluster node that
has not reached Redis yet: telling a new client "0" would make its reconnect replay the
owner's whole history), nor after a resume that gave up (the client keeps its old point).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from bittrade_feed.broadcast.registry import Registry, Subscriber
from bittrade_feed.broadcast.wire import FORMATS, Frames, encode, encode_for
from bittrade_feed.clock import Clock

__all__ = ["PAGE", "RETRY_DELAYS", "AlertEvent", "AlertFeed", "AlertSource"]

log = structlog.get_logger("bittrade_feed.broadcast.alerts")

PAGE = 1000
"""Firings read from the source per call while a stream catches up."""
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Seconds between reads of a failing source (about 8 s in all) before the resume gives up."""


class AlertEvent(Protocol):
    """What the hub needs of a firing (``alerts.store.StoredFiring``)."""

    @property
    def id(self) -> int:  # noqa: D102
        ...

    def to_json(self) -> dict[str, Any]: ...  # noqa: D102


AlertSource = Callable[[str, int, int], Awaitable[Sequence[AlertEvent]]]
"""``(owner, after, limit)``: the owner's firings with an id above ``after``, oldest first."""

Write = Callable[[Subscriber, bytes, int], None]
"""The hub's capped write: (subscriber, bytes, events counted); closes it if gone or slow."""


class AlertFeed:
    """The alert side of the hub: live fan-out by owner, and the resume hand-over."""

    def __init__(
        self,
        registry: Registry,
        write: Write,
        close: Callable[[Subscriber, str], None],
        clock: Clock,
        dropped: Callable[[int], None],
    ) -> None:
        self._registry = registry
        self._write = write
        self._close = close
        self._clock = clock
        self._dropped = dropped
        """Counts firings not written to a stream that already had their id (a resume read
        them first, a second publisher repeated them, or they came out of order)."""
        self.source: AlertSource | None = None
        """The resume reader; ``None`` (alerts off, or shutting down): no stored firings."""
        self.latest: int | None = None
        """The highest firing id that exists (``None``: not known yet)."""
        self._published = 0
        """The highest firing id published here."""

    def note(self, firing_id: int) -> None:
        """A firing with this id is published now."""
        self._published = max(self._published, firing_id)
        if self.latest is not None:
            self.latest = max(self.latest, firing_id)

    def known(self, latest: int) -> None:
        """Every firing up to ``latest`` exists already (read from the store)."""
        self.latest = max(latest, self._published, self.latest or 0)

    def publish(self, owner: str, firing: AlertEvent) -> None:
        """Write ``firing`` to every stream of ``owner`` whose cursor is below its id."""
        ident = firing.id
        self.note(ident)
        groups = self._registry.by_owner.get(owner)
        if not groups:
            return
        frames: Frames = encode("alert", firing.to_json())
        for fmt in FORMATS:
            # A copy: a write may close (and so unregister) a slow subscriber.
            for sub in list(groups[fmt]):
                if sub.alert_held is not None:
                    sub.alert_held.append((ident, frames))
                elif ident > sub.alert_id:
                    sub.alert_id = ident
                    self._write(sub, frames[fmt], 1)
                else:
                    self._dropped(1)

    async def catch_up(self, sub: Subscriber, after: int | None) -> None:
        """After the price opening: the stored firings above ``after``, then the held ones.

        A cancellation propagates (the hub detaches ``sub``); a failing source is retried
        and then given up on, closing the stream (see ``_replay``).
        """
        complete = await self._replay(sub) if after is not None else True
        held, sub.alert_held = sub.alert_held or [], None
        if sub.done.done():
            return
        # Held in publish order, which may repeat an id (a second publisher): each one is
        # kept only if above every one kept before it.
        newer = []
        for ident, frames in held:
            if ident > sub.alert_id:
                sub.alert_id = ident
                newer.append(frames[sub.fmt])
        if len(held) > len(newer):
            self._dropped(len(held) - len(newer))
        if complete and self.latest is not None:
            sub.alert_id = max(sub.alert_id, self.latest)
            newer.append(encode_for("alerts", {"after": sub.alert_id}, sub.fmt))
        if newer:
            self._write(sub, b"".join(newer), len(newer))

    async def _replay(self, sub: Subscriber) -> bool:
        """Write the source's firings above ``sub.alert_id``, page by page, until caught up
        (``True``) or given up on (``False``).

        A read that fails is retried after each of ``RETRY_DELAYS`` (the held live firings
        keep collecting meanwhile); after the last the resume gives up with an error in
        the log and closes the stream (``unavailable``): its client reconnects with the
        ``alerts_after`` it had, so a broken source costs a reconnect, never a firing.
        """
        assert sub.owner is not None
        failures = 0
        while not sub.done.done():
            source = self.source
            if source is None:
                return False
            try:
                page = await source(sub.owner, sub.alert_id, PAGE)
            except Exception as exc:
                if failures == len(RETRY_DELAYS):
                    log.error(
                        "alert resume gave up; closing the stream (its client resumes again)",
                        owner=sub.owner,
                        after=sub.alert_id,
                        reason=str(exc) or type(exc).__name__,
                    )
                    # Going on live would let a newer alert move the client's point past the
                    # missed ones; closed, it reconnects with the point it had.
                    self._close(sub, "unavailable")
                    return False
                log.warning(
                    "alert resume read failed",
                    owner=sub.owner,
                    after=sub.alert_id,
                    reason=str(exc) or type(exc).__name__,
                    retry_in=RETRY_DELAYS[failures],
                )
                await self._pause(sub, RETRY_DELAYS[failures])
                failures += 1
                continue
            failures = 0
            # The source promises ids above the cursor, oldest first; not trusted blindly.
            newer = []
            for firing in page:
                if firing.id > sub.alert_id:
                    sub.alert_id = firing.id
                    newer.append(encode_for("alert", firing.to_json(), sub.fmt))
            if newer and not sub.done.done():
                self._write(sub, b"".join(newer), len(newer))
            if len(page) < PAGE or not newer:
                return True  # caught up (or a source that does not move on: stop, not spin)
        return False

    async def _pause(self, sub: Subscriber, seconds: float) -> None:
        """Wait ``seconds``, or less if ``sub`` is closed meanwhile (shutdown waits for no
        backoff)."""
        sleep = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((sleep, sub.done), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
