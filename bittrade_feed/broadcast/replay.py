"""Resume: the ring of recent ticks, and the store queries behind it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from bittrade_feed.broadcast.wire import Frames, price_frames
from bittrade_feed.models import Tick


class Replay(Protocol):
    """The store queries resume needs (so the hub does not depend on SQLite)."""

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]: ...  # noqa: D102
    async def min_id(self) -> int: ...  # noqa: D102


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

    def load(self, recent: Sequence[Tick], max_id: int) -> dict[int, Frames]:
        """Seed from the store (``recent`` oldest first); the frames by id, for reuse."""
        kept = recent[-self.limit :] if self.limit else ()
        self._items = deque((t, price_frames(t)) for t in kept)
        self.floor = kept[0].id - 1 if kept else max_id
        return {t.id: frames for t, frames in self._items}

    def append(self, tick: Tick, frames: Frames) -> None:
        """Keep a new tick, evicting the oldest past the limit."""
        if self.limit:
            if len(self._items) >= self.limit:
                self.floor = self._items.popleft()[0].id
            self._items.append((tick, frames))
        else:
            self.floor = tick.id

    def after(self, after: int, pairs: tuple[str, ...]) -> list[Frames]:
        """Frames of ring ticks newer than ``after``, oldest first: O(missed), not O(ring)."""
        found: list[Frames] = []
        for tick, frames in reversed(self._items):
            if tick.id <= after or len(found) > self.limit:
                break
            if tick.pair in pairs:
                found.append(frames)
        found.reverse()
        return found
