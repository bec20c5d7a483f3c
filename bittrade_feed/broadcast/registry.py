"""The subscriber registry: who is admitted and connected, in which format, for which pairs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable
from typing import Protocol

from bittrade_feed.broadcast.limits import ConnectRate, Limited, address_group
from bittrade_feed.broadcast.wire import FORMATS, Frames, WireFormat
from bittrade_feed.config import StreamConfig

__all__ = ["Full", "Limited", "Registry", "Slot", "Subscriber", "Transport"]


class Transport(Protocol):
    """The part of ``asyncio.Transport`` the hub uses."""

    def write(self, data: bytes) -> None: ...  # noqa: D102
    def is_closing(self) -> bool: ...  # noqa: D102
    def get_write_buffer_size(self) -> int: ...  # noqa: D102
    def abort(self) -> None: ...  # noqa: D102


class Full(Exception):
    """``stream.max_subscribers`` connections are already admitted."""


class Slot:
    """One admitted connection's place under every limit it was counted in."""

    __slots__ = ("credential", "group", "released")

    def __init__(self, group: str = "", credential: str = "") -> None:
        self.released = False
        self.group = group
        """The address group counted under ``stream.max_per_address`` ("" if none)."""
        self.credential = credential
        """The credential counted under ``stream.max_per_credential`` ("" if none)."""


class Subscriber:
    """One open stream, and what the hub has written to it."""

    __slots__ = (
        "alert_held",
        "alert_id",
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
        "owner",
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
        owner: str | None = None,
        alert_id: int = 0,
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
        self.owner = owner
        """Whose ``alert`` events it gets (``None``: none, its principal lacks ``alerts``)."""
        self.alert_id = alert_id
        """The highest firing id written to it (or that its client already had)."""
        self.alert_held: list[tuple[int, Frames]] | None = None if owner is None else []
        """Live alerts (firing id, frames) held until its opening and resume are written."""


Groups = tuple[set[Subscriber], set[Subscriber], set[Subscriber]]
"""Subscribers split by wire format, indexed by ``WireFormat``."""


def _groups() -> Groups:
    return set(), set(), set()


class Registry:
    """Admitted connections, and subscribers by pair and by pair set, per wire format."""

    def __init__(self, config: StreamConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.limit = config.max_subscribers
        self.admitted = 0
        """Slots held: connections past admission, attached or still opening."""
        self.by_address: dict[str, int] = {}
        """Slots held per address group (groups at 0 are removed)."""
        self.by_credential: dict[str, int] = {}
        """Slots held per non-empty credential (at 0 removed)."""
        self.rates: ConnectRate | None = None
        if config.connect_burst:
            self.rates = ConnectRate(config.connect_burst, config.connect_per_second, clock)
        self.by_pair: dict[str, Groups] = {}
        self.by_set: dict[frozenset[str], Groups] = {}
        """The same subscribers by their whole pair set (coalesced windows, resyncs)."""
        self.by_owner: dict[str, Groups] = {}
        """Subscribers that get alert events, by owner (owners without one are removed)."""
        self._all: set[Subscriber] = set()
        """Every subscriber once, for the timer (the per-pair sets repeat multi-pair ones)."""
        self._count = [0 for _ in FORMATS]

    def admit(self, address: str = "", credential: str = "") -> Slot:
        """Take a slot, or raise ``Full`` (global cap) or ``Limited`` (429).

        Synchronous, so no await splits a check from its count. ``address`` "" (an
        internal caller) skips the per-address limits, ``credential`` "" (anonymous) the
        per-credential one. Every attempt past the global cap spends a token of its
        address's bucket, refused or not: a client retrying in a loop slows itself down.
        """
        if self.admitted >= self.limit:
            raise Full
        config = self.config
        group = address_group(address) if address else ""
        if group and self.rates is not None:
            wait = self.rates.take(group)
            if wait:
                raise Limited(
                    "rate",
                    wait,
                    f"more than {config.connect_burst} new streams at once, then "
                    f"{config.connect_per_second:g} per second, from {group} "
                    "(stream.connect_burst, stream.connect_per_second)",
                )
        held = _open(self.by_address, group, config.max_per_address, "address", f"from {group}")
        # The detail never names the credential: it may be a secret's id.
        mine = _open(
            self.by_credential,
            credential,
            config.max_per_credential,
            "credential",
            "with this credential",
        )
        self.admitted += 1
        if group:
            self.by_address[group] = held + 1
        if credential:
            self.by_credential[credential] = mine + 1
        return Slot(group, credential)

    def release(self, slot: Slot) -> None:
        """Give a slot back, and its address and credential counts (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self.admitted -= 1
        _drop(self.by_address, slot.group)
        _drop(self.by_credential, slot.credential)

    def __len__(self) -> int:
        return sum(self._count)

    def __contains__(self, sub: Subscriber) -> bool:
        return sub in self._all

    def add(self, sub: Subscriber) -> None:
        """Register a subscriber under each of its pairs and its pair set."""
        for pair in sub.pairs:
            self.by_pair.setdefault(pair, _groups())[sub.fmt].add(sub)
        self.by_set.setdefault(sub.key, _groups())[sub.fmt].add(sub)
        if sub.owner is not None:
            self.by_owner.setdefault(sub.owner, _groups())[sub.fmt].add(sub)
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
        if sub.owner is not None:
            mine = self.by_owner[sub.owner]
            mine[sub.fmt].discard(sub)
            if not any(mine):
                del self.by_owner[sub.owner]
        self._count[sub.fmt] -= 1

    def all(self) -> list[Subscriber]:
        """Every subscriber once (a copy, so callers may close while iterating)."""
        return list(self._all)


def _open(counts: dict[str, int], key: str, cap: int, limit: str, where: str) -> int:
    """How many streams ``key`` holds; ``Limited`` when that is ``cap`` already (0: none)."""
    held = counts.get(key, 0)
    if key and cap and held >= cap:
        raise Limited(
            limit, retry_spread(), f"{held} streams already open {where} (stream.max_per_{limit})"
        )
    return held


def _drop(counts: dict[str, int], key: str) -> None:
    """One less under ``key``; a key at 0 is removed, so the dict holds only live ones."""
    if not key:
        return
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


def retry_spread() -> int:
    """A ``Retry-After`` for a full limit: a spread keeps refused clients from returning
    in one wave."""
    return random.randint(2, 10)


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
