"""The subscriber registry: who is admitted and connected, in which format, for which pairs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from typing import Protocol

from bittrade_feed.broadcast.wire import FORMATS, Frames, WireFormat


class Transport(Protocol):
    """The part of ``asyncio.Transport`` the hub uses."""

    def write(self, data: bytes) -> None: ...  # noqa: D102
    def is_closing(self) -> bool: ...  # noqa: D102
    def get_write_buffer_size(self) -> int: ...  # noqa: D102
    def abort(self) -> None: ...  # noqa: D102


class Full(Exception):
    """``stream.max_subscribers`` connections are already admitted."""


class Slot:
    """One admitted connection's place under ``stream.max_subscribers``."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


class Subscriber:
    """One open stream, and what the hub has written to it."""

    __slots__ = (
        "buffer",
        "credential",
        "done",
        "ends",
        "expires",
        "fmt",
        "gap",
        "key",
        "last_id",
        "last_write",
        "pairs",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        fmt: WireFormat,
        pairs: tuple[str, ...],
        now: float,
        expires: float,
        credential: str = "",
    ) -> None:
        self.transport = transport
        self.fmt = fmt
        self.pairs = pairs
        self.key = frozenset(pairs)
        self.last_write = now
        self.expires = expires
        """Monotonic time the timer closes the stream at, for the reason in ``ends``."""
        self.ends = "lifetime"
        """``lifetime`` (stream.max_lifetime) or ``expired`` (the credential's expiry)."""
        self.credential = credential
        """The ``Principal.credential`` it was opened with ("" for anonymous)."""
        self.last_id = 0
        """The id of the last price (or resync) written; only higher ids are written."""
        self.buffer: list[tuple[int, Frames]] | None = None
        """Live events (id, or 0 for a status) held while the opening is fetched."""
        self.gap: str | None = None
        """Why a resync must replace the held events (ids were lost meanwhile)."""
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()


Groups = tuple[set[Subscriber], set[Subscriber], set[Subscriber]]
"""Subscribers split by wire format, indexed by ``WireFormat``."""


def _groups() -> Groups:
    return set(), set(), set()


class Registry:
    """Admitted connections, and subscribers by pair and by pair set, per wire format."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted = 0
        """Slots held: connections past admission, attached or still opening."""
        self.by_pair: dict[str, Groups] = {}
        self.by_set: dict[frozenset[str], Groups] = {}
        """The same subscribers by their whole pair set (coalesced windows, resyncs)."""
        self._all: set[Subscriber] = set()
        """Every subscriber once, for the timer (the per-pair sets repeat multi-pair ones)."""
        self._count = [0 for _ in FORMATS]

    def admit(self) -> Slot:
        """Take a slot, or raise ``Full``; synchronous, so no await splits check and act."""
        if self.admitted >= self.limit:
            raise Full
        self.admitted += 1
        return Slot()

    def release(self, slot: Slot) -> None:
        """Give a slot back (idempotent)."""
        if not slot.released:
            slot.released = True
            self.admitted -= 1

    def __len__(self) -> int:
        return sum(self._count)

    def __contains__(self, sub: Subscriber) -> bool:
        return sub in self._all

    def add(self, sub: Subscriber) -> None:
        """Register a subscriber under each of its pairs and its pair set."""
        for pair in sub.pairs:
            self.by_pair.setdefault(pair, _groups())[sub.fmt].add(sub)
        self.by_set.setdefault(sub.key, _groups())[sub.fmt].add(sub)
        self._all.add(sub)
        self._count[sub.fmt] += 1

    def remove(self, sub: Subscriber) -> None:
        """Forget a registered subscriber."""
        self._all.remove(sub)
        for pair in sub.pairs:
            self.by_pair[pair][sub.fmt].discard(sub)
        groups = self.by_set[sub.key]
        groups[sub.fmt].discard(sub)
        if not any(groups):
            del self.by_set[sub.key]
        self._count[sub.fmt] -= 1

    def all(self) -> list[Subscriber]:
        """Every subscriber once (a copy, so callers may close while iterating)."""
        return list(self._all)


def expiry(now: float, lifetime: float) -> float:
    """When a stream opened at ``now`` is retired (``inf`` for a lifetime of 0: never)."""
    if not lifetime:
        return float("inf")
    # Jitter spreads the reconnects of clients that all connected at once.
    return now + lifetime * random.uniform(0.85, 1.15)


def bound_kernel_buffer(transport: Transport, cap: int) -> None:
    """Fix the socket's send buffer near the cap instead of letting it autotune to MBs.

    Without this a reader that stalls first fills a kernel buffer of up to
    ``net.ipv4.tcp_wmem`` (4 MiB here) before our own cap even sees a byte, so the
    memory a stalled subscriber can pin would not be bounded by our setting.
    """
    get_extra_info = getattr(transport, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    if sock is not None:
        # The kernel doubles the value it is given (socket(7)), so half the cap it is.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(cap // 2, 4096))
