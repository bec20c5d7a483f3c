"""Resume: the ring of recent ticks and the choice between snapshot, replay and resync.

A resume point ``last_id`` is answered from the ring when the ring holds every tick
after it, else from the store; past what either can replay completely (more than
``replay_limit`` events, or a range retention deleted) the answer is one ``resync``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from bittrade_feed.broadcast.wire import Frames, encode, price_frames
from bittrade_feed.models import FeedStatus, Tick

Events = list[tuple[int, Frames]]
"""Events to write, each with its id (0 for events without one, such as status)."""


class Replay(Protocol):
    """The store queries resume needs (so the hub does not depend on SQLite)."""

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]: ...  # noqa: D102

    @property
    def history_floor(self) -> int:
        """A resume point below this cannot be replayed completely (0: history complete)."""
        ...


class Resync(NamedTuple):
    """Why a resume point gets one ``resync`` instead of a replay."""

    label: str
    """The metric label: one of ``ops.metrics.RESYNC_REASONS``."""
    reason: str
    """The sentence the client receives."""


class Need(enum.Enum):
    """What the opening needs before it can be written."""

    SNAPSHOT = "snapshot"
    STORE = "store"


class Known:
    """The latest price and status of each pair, with their frames: what a newcomer is told."""

    def __init__(self) -> None:
        self.ticks: dict[str, Tick] = {}
        self.statuses: dict[str, FeedStatus] = {}
        self._tick_frames: dict[str, tuple[int, Frames]] = {}
        self._status_frames: dict[str, Frames] = {}

    def set_tick(self, tick: Tick, frames: Frames) -> None:
        """Remember ``tick`` as its pair's latest."""
        self.ticks[tick.pair] = tick
        self._tick_frames[tick.pair] = (tick.id, frames)

    def set_status(self, status: FeedStatus, frames: Frames) -> None:
        """Remember ``status`` as its pair's current one."""
        self.statuses[status.pair] = status
        self._status_frames[status.pair] = frames

    def latest(self, pairs: Iterable[str]) -> list[Tick]:
        """The latest tick of each pair that has one, in id order."""
        return sorted((self.ticks[p] for p in pairs if p in self.ticks), key=lambda t: t.id)

    def snapshot(self, pairs: tuple[str, ...]) -> Events:
        """The latest price of each pair, in id order."""
        return [(t.id, self._frames_of(t)) for t in self.latest(pairs)]

    def _frames_of(self, tick: Tick) -> Frames:
        # A price put in ``ticks`` from outside (a pair added on reload) has no frames yet.
        known = self._tick_frames.get(tick.pair)
        return known[1] if known is not None and known[0] == tick.id else price_frames(tick)

    def status_events(self, pairs: tuple[str, ...]) -> Events:
        """The current status of each pair that has one."""
        return [(0, self._status_frames[p]) for p in pairs if p in self._status_frames]

    def resync(self, pairs: Iterable[str], reason: str) -> tuple[int, Frames]:
        """One ``resync`` event carrying the latest price of each pair, and its id."""
        ticks = self.latest(pairs)
        # With no tick to point at, an empty id clears the client's (unknown) resume point,
        # so its next reconnect asks for a snapshot instead of resyncing again.
        last = ticks[-1].id if ticks else 0
        data = {"reason": reason, "ticks": [t.to_json() for t in ticks]}
        return last, encode("resync", data, last or "")


class Ring:
    """The newest ticks with their encoded frames.

    A reconnect storm replays bytes that already exist instead of encoding every missed
    tick once per client.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[tuple[Tick, Frames]] = deque()
        self.floor = 0
        """Every tick with an id above this is in the ring."""

    def load(self, recent: Sequence[Tick], max_id: int, history_floor: int) -> dict[int, Frames]:
        """Seed from the store (``recent`` oldest first); the frames by id, for reuse.

        Stored ids need not be contiguous (retention deletes ranges), so the ring claims
        only ids above its first kept tick and above what the store lost.
        """
        kept = recent[-self.limit :] if self.limit else ()
        self._items = deque((t, price_frames(t)) for t in kept)
        self.floor = max(kept[0].id - 1 if kept else max_id, history_floor)
        return {t.id: frames for t, frames in self._items}

    def append(self, tick: Tick, frames: Frames) -> None:
        """Keep a new tick, evicting the oldest past the limit."""
        if self.limit:
            if len(self._items) >= self.limit:
                self.floor = max(self.floor, self._items.popleft()[0].id)
            self._items.append((tick, frames))
        else:
            self.floor = tick.id

    def reset(self, floor: int) -> None:
        """Forget every tick: ids up to ``floor`` are not all known (a gap in the input)."""
        self._items.clear()
        self.floor = floor

    def after(self, after: int, pairs: tuple[str, ...]) -> Events:
        """Ring ticks of ``pairs`` newer than ``after``, oldest first: O(missed), not O(ring).

        Stops one past ``limit`` found, which is enough to tell "too many".
        """
        found: Events = []
        for tick, frames in reversed(self._items):
            if tick.id <= after or len(found) > self.limit:
                break
            if tick.pair in pairs:
                found.append((tick.id, frames))
        found.reverse()
        return found


def decide(
    last_id: int | None, max_id: int, ring: Ring, history_floor: int, pairs: tuple[str, ...]
) -> Need | Resync | Events:
    """The opening for a resume point, from what the hub holds (no await)."""
    if last_id is None:
        return Need.SNAPSHOT
    if last_id > max_id:
        return Resync("ahead", f"event id {last_id} is ahead of this feed ({max_id})")
    if ring.floor > last_id:
        return _lost(last_id, history_floor) or Need.STORE
    return _at_most(ring.after(last_id, pairs), ring.limit)


def from_store(last_id: int, rows: list[Tick], history_floor: int, limit: int) -> Resync | Events:
    """The replay the store answered (asked for ``limit + 1`` rows), or why to resync.

    The floor is read after the query: retention that ran meanwhile may have taken rows.
    """
    return _lost(last_id, history_floor) or _at_most([(t.id, price_frames(t)) for t in rows], limit)


def _lost(last_id: int, history_floor: int) -> Resync | None:
    if last_id < history_floor:
        return Resync("retention", f"events after {last_id} are no longer kept")
    return None


def _at_most(events: Events, limit: int) -> Resync | Events:
    if len(events) > limit:
        return Resync("replay_limit", f"more than {limit} events missed")
    return events
