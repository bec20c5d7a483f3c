"""The broadcast hub: every tick is encoded once and written to every subscriber.

A tick becomes one ``bytes`` frame per wire format (SSE chunked, SSE raw for HTTP/1.0,
WebSocket), and the same object is handed to ``transport.write`` of each subscriber of
its pair: no per-subscriber encoding, task, queue or await on the broadcast path.
A subscriber whose unsent bytes pass ``max_buffer_bytes`` is aborted (``slow``), so one
stalled reader neither slows the others nor grows our memory.

One shared timer sends heartbeats to idle subscribers and retires connections past
their (jittered) lifetime. Resume: a ring of recent ticks answers most reconnects
without touching SQLite; older resume points fall back to the store; past what can be
replayed the client gets one ``resync`` event with the latest snapshot.

The hub's single input is ``publish(tick)`` / ``publish_status(status)``: ticks arrive
from the local fetcher today, from another daemon through Redis later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from bittrade_feed.clock import Clock
from bittrade_feed.config import StreamConfig
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.ops.metrics import Metrics

log = structlog.get_logger("bittrade_feed.broadcast.hub")

# Wire formats; a subscriber has exactly one.
SSE_CHUNKED = 0
SSE_RAW = 1
WS = 2
FORMATS = (SSE_CHUNKED, SSE_RAW, WS)
TRANSPORT_OF = ("sse", "sse", "ws")

SSE_HEARTBEAT = b": keep-alive\n\n"
WS_PING = b"\x89\x00"


class Transport(Protocol):
    """The part of ``asyncio.Transport`` the hub uses."""

    def write(self, data: bytes) -> None: ...  # noqa: D102
    def is_closing(self) -> bool: ...  # noqa: D102
    def get_write_buffer_size(self) -> int: ...  # noqa: D102
    def abort(self) -> None: ...  # noqa: D102


class Replay(Protocol):
    """The store queries resume needs (so the hub does not depend on SQLite)."""

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]: ...  # noqa: D102
    async def min_id(self) -> int: ...  # noqa: D102


class Subscriber:
    """One open stream."""

    __slots__ = ("done", "expires", "fmt", "last_write", "pairs", "transport")

    def __init__(
        self, transport: Transport, fmt: int, pairs: tuple[str, ...], now: float, expires: float
    ) -> None:
        self.transport = transport
        self.fmt = fmt
        self.pairs = pairs
        self.last_write = now
        self.expires = expires
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()


def sse_frame(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    """One SSE event; compact JSON contains no newline, so one ``data:`` line suffices.

    ``event_id=""`` sends an empty ``id:`` line, which clears the client's resume point.
    """
    head = "" if event_id is None else f"id: {event_id}\n" if event_id != "" else "id:\n"
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def ws_message(event: str, data: Any) -> bytes:
    """The WebSocket text payload: the same JSON, with the event type inside."""
    return json.dumps(
        {"event": event, "data": data}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame, as a server sends it (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def chunk(frame: bytes) -> bytes:
    """Frame bytes as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``)."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


Frames = tuple[bytes, bytes, bytes]
"""One event in every wire format, indexed by ``SSE_CHUNKED``, ``SSE_RAW``, ``WS``."""


def encode(event: str, data: Any, event_id: int | str | None = None) -> Frames:
    """One event in every wire format, indexed by ``SSE_CHUNKED``, ``SSE_RAW``, ``WS``."""
    sse = sse_frame(event, data, event_id)
    return chunk(sse), sse, ws_frame(ws_message(event, data))


class Hub:
    """Subscribers, the replay ring, and the broadcast."""

    def __init__(
        self, config: StreamConfig, clock: Clock, metrics: Metrics, replay: Replay
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.replay = replay
        self.latest: dict[str, Tick] = {}
        self.statuses: dict[str, FeedStatus] = {}
        self.max_id = 0
        # Ticks are kept with their encoded frames: a reconnect storm replays bytes that
        # already exist instead of encoding every missed tick once per client.
        self._ring: deque[tuple[Tick, Frames]] = deque()
        self._ring_floor = 0
        """Every tick with an id above this is in the ring."""
        self._latest_frames: dict[str, Frames] = {}
        self._status_frames: dict[str, Frames] = {}
        self._by_pair: dict[str, tuple[set[Subscriber], ...]] = {}
        self._all: set[Subscriber] = set()
        """Every subscriber once, for the timer (the per-pair sets repeat multi-pair ones)."""
        self._count = [0, 0, 0]
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._pending: dict[str, list[Frames]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.run_callback: Callable[[str, Callable[[], None]], None] = _call_now
        """Runs the timer callbacks the hub schedules; the app's supervisor reports a raise."""
        # Labelled children looked up once: .labels() costs microseconds per call.
        self._m_events = [metrics.events_sent.labels(t) for t in TRANSPORT_OF]
        self._m_bytes = [metrics.bytes_sent.labels(t) for t in TRANSPORT_OF]
        self._m_opened = [metrics.connections_opened.labels(t) for t in TRANSPORT_OF]
        self._m_subscribers = [metrics.subscribers.labels(t) for t in TRANSPORT_OF]

    # -- set-up -------------------------------------------------------------

    def load(
        self,
        recent: Sequence[Tick],
        latest: dict[str, Tick],
        max_id: int,
    ) -> None:
        """Seed the ring and snapshot from the store at start-up (``recent`` oldest first)."""
        kept = recent[-self.config.replay_limit :] if self.config.replay_limit else ()
        self._ring = deque((t, _price_frames(t)) for t in kept)
        self._ring_floor = kept[0].id - 1 if kept else max_id
        self.max_id = max_id
        in_ring = {t.id: frames for t, frames in self._ring}
        for tick in latest.values():
            self.latest[tick.pair] = tick
            self._latest_frames[tick.pair] = in_ring.get(tick.id) or _price_frames(tick)

    def start(self) -> None:
        """Start the shared heartbeat timer."""
        self._heartbeat_task = asyncio.create_task(self.run_timer(), name="hub-heartbeat")

    async def stop(self) -> None:
        """Stop the timer and close every stream (reason ``shutdown``)."""
        self.flush()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        self.close_all("shutdown")

    # -- input ---------------------------------------------------------------

    def publish(self, tick: Tick) -> None:
        """Hand a stored tick to every subscriber of its pair."""
        frames = _price_frames(tick)
        self.latest[tick.pair] = tick
        self._latest_frames[tick.pair] = frames
        self.max_id = max(self.max_id, tick.id)
        if self.config.replay_limit:
            if len(self._ring) >= self.config.replay_limit:
                self._ring_floor = self._ring.popleft()[0].id
            self._ring.append((tick, frames))
        else:
            self._ring_floor = tick.id
        self._broadcast(tick.pair, frames)

    def publish_status(self, status: FeedStatus) -> None:
        """Tell every subscriber of the pair that it went stale or live again (no id)."""
        frames = encode("status", status.to_json())
        self.statuses[status.pair] = status
        self._status_frames[status.pair] = frames
        self._broadcast(status.pair, frames)

    def _broadcast(self, pair: str, frames: Frames) -> None:
        if not self.config.coalesce_ms:
            self._send(pair, frames, 1)
            return
        # Coalescing: one write per subscriber per window instead of per event; each
        # send() costs ~10 us of kernel time, so at high tick rates this halves the CPU.
        self._pending.setdefault(pair, []).append(frames)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(
                self.config.coalesce_ms / 1000, self.run_callback, "hub-flush", self.flush
            )

    def flush(self) -> None:
        """Send what the coalescing window has collected (a no-op when nothing waits)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, {}
        for pair, items in pending.items():
            joined = items[0] if len(items) == 1 else _join(items)
            self._send(pair, joined, len(items))

    def _send(self, pair: str, frames: Frames, events: int) -> None:
        groups = self._by_pair.get(pair)
        if not groups:
            return
        started = self.clock.monotonic()
        cap = self.config.max_buffer_bytes
        gone: list[tuple[Subscriber, str]] = []
        for fmt in FORMATS:
            subs = groups[fmt]
            if not subs:
                continue
            data = frames[fmt]
            sent = 0
            for sub in subs:
                transport = sub.transport
                if transport.is_closing():
                    gone.append((sub, "client"))
                    continue
                transport.write(data)
                sub.last_write = started
                sent += 1
                if transport.get_write_buffer_size() > cap:
                    gone.append((sub, "slow"))
            self._m_events[fmt].inc(sent * events)
            self._m_bytes[fmt].inc(sent * len(data))
        for sub, reason in gone:
            self.close(sub, reason)
        self.metrics.broadcast_duration.observe(self.clock.monotonic() - started)

    # -- subscribers ----------------------------------------------------------

    @property
    def count(self) -> int:
        """Subscribers connected now."""
        return sum(self._count)

    def full(self) -> bool:
        """Whether a new subscriber must be refused."""
        return self.count >= self.config.max_subscribers

    async def subscribe(
        self, transport: Transport, fmt: int, pairs: tuple[str, ...], last_id: int | None
    ) -> Subscriber:
        """Send the opening frames (snapshot, replay or resync) and attach the subscriber.

        After the optional store query nothing awaits, so no tick published meanwhile can
        fall between the replay and the live stream.
        """
        rows: list[Tick] | None = None
        min_id = 0
        if last_id is not None and self._ring_floor > last_id:
            rows = await self.replay.since_id(last_id, pairs, self.config.replay_limit + 1)
            min_id = await self.replay.min_id()
        # Events still in the coalescing window go to the current subscribers first; the
        # newcomer's opening already contains them (they are in the ring), so no duplicate.
        self.flush()
        opening = self._opening(pairs, last_id, rows, min_id)
        _bound_kernel_buffer(transport, self.config.max_buffer_bytes)
        now = self.clock.monotonic()
        sub = Subscriber(transport, fmt, pairs, now, self._expiry(now))
        for pair in pairs:
            self._by_pair.setdefault(pair, (set(), set(), set()))[fmt].add(sub)
        self._all.add(sub)
        self._count[fmt] += 1
        self._m_opened[fmt].inc()
        self._m_subscribers[fmt].inc()
        if opening:
            transport.write(b"".join(frames[fmt] for frames in opening))
        return sub

    def _opening(
        self, pairs: tuple[str, ...], last_id: int | None, rows: list[Tick] | None, min_id: int
    ) -> list[Frames]:
        if last_id is None:
            frames = self._snapshot(pairs)
        elif last_id > self.max_id:
            return self._resync(pairs, f"event id {last_id} is ahead of this feed ({self.max_id})")
        else:
            frames = []
            after = last_id
            if rows is not None:
                if min_id > last_id + 1:
                    return self._resync(pairs, f"events after {last_id} are no longer kept")
                frames = [_price_frames(t) for t in rows]
                after = rows[-1].id if rows else last_id
            frames += self._ring_after(after, pairs)
            if len(frames) > self.config.replay_limit:
                return self._resync(pairs, f"more than {self.config.replay_limit} events missed")
        return frames + self._statuses(pairs)

    def _ring_after(self, after: int, pairs: tuple[str, ...]) -> list[Frames]:
        """Frames of ring ticks newer than ``after``, oldest first: O(missed), not O(ring)."""
        found: list[Frames] = []
        for tick, frames in reversed(self._ring):
            if tick.id <= after or len(found) > self.config.replay_limit:
                break
            if tick.pair in pairs:
                found.append(frames)
        found.reverse()
        return found

    def _latest_ticks(self, pairs: tuple[str, ...]) -> list[Tick]:
        """The latest tick of each pair that has one, in id order."""
        return sorted((self.latest[p] for p in pairs if p in self.latest), key=lambda t: t.id)

    def _snapshot(self, pairs: tuple[str, ...]) -> list[Frames]:
        # A price put in ``latest`` from outside (a pair added on reload) has no frames yet.
        ticks = self._latest_ticks(pairs)
        return [self._latest_frames.get(t.pair) or _price_frames(t) for t in ticks]

    def _statuses(self, pairs: tuple[str, ...]) -> list[Frames]:
        return [self._status_frames[p] for p in pairs if p in self._status_frames]

    def _resync(self, pairs: tuple[str, ...], reason: str) -> list[Frames]:
        ticks = self._latest_ticks(pairs)
        # With no tick to point at, an empty id clears the client's (unknown) resume point,
        # so its next reconnect asks for a snapshot instead of resyncing again.
        last = ticks[-1].id if ticks else ""
        data = {"reason": reason, "ticks": [t.to_json() for t in ticks]}
        return [encode("resync", data, last), *self._statuses(pairs)]

    def close(self, sub: Subscriber, reason: str) -> None:
        """Detach a subscriber and wake its handler; ``slow`` ones are aborted at once."""
        if sub.done.done():
            return
        if reason == "slow":
            # Its unsent bytes are the problem: drop them instead of waiting to flush.
            sub.transport.abort()
        sub.done.set_result(reason)
        self.detach(sub, reason)

    def detach(self, sub: Subscriber, reason: str = "client") -> None:
        """Forget a subscriber (idempotent); called by the handler when it ends."""
        if sub not in self._all:
            return
        self._all.remove(sub)
        for pair in sub.pairs:
            self._by_pair[pair][sub.fmt].discard(sub)
        if not sub.done.done():
            sub.done.set_result(reason)
        self._count[sub.fmt] -= 1
        self._m_subscribers[sub.fmt].dec()
        self.metrics.connections_closed.labels(TRANSPORT_OF[sub.fmt], reason).inc()

    def close_all(self, reason: str) -> None:
        """Close every stream (shutdown)."""
        for sub in list(self._all):
            self.close(sub, reason)

    def subscribers(self) -> list[Subscriber]:
        """Every connected subscriber (each once)."""
        return list(self._all)

    # -- the shared timer -----------------------------------------------------

    def _expiry(self, now: float) -> float:
        lifetime = self.config.max_lifetime
        if not lifetime:
            return float("inf")
        # Jitter spreads the reconnects of clients that all connected at once.
        return now + lifetime * random.uniform(0.85, 1.15)

    async def run_timer(self) -> None:
        """The shared timer: ``tick_timer`` every third of the heartbeat period, for ever."""
        period = self.config.heartbeat / 3
        while True:
            await self.clock.sleep(period)
            self.tick_timer()

    def tick_timer(self) -> None:
        """Heartbeat idle subscribers, retire expired ones, forget dead ones."""
        now = self.clock.monotonic()
        idle_before = now - self.config.heartbeat
        beats = [0, 0, 0]
        for sub in self.subscribers():
            transport = sub.transport
            if transport.is_closing():
                self.close(sub, "client")
            elif now >= sub.expires:
                self.close(sub, "lifetime")
            elif sub.last_write <= idle_before:
                transport.write(_HEARTBEATS[sub.fmt])
                sub.last_write = now
                beats[sub.fmt] += 1
                if transport.get_write_buffer_size() > self.config.max_buffer_bytes:
                    self.close(sub, "slow")
        for fmt in FORMATS:
            if beats[fmt]:
                self._m_bytes[fmt].inc(beats[fmt] * len(_HEARTBEATS[fmt]))


_HEARTBEATS = (chunk(SSE_HEARTBEAT), SSE_HEARTBEAT, WS_PING)


def _call_now(name: str, callback: Callable[[], None]) -> None:
    callback()


def _join(items: list[Frames]) -> Frames:
    """Several events as one write per format (chunks and WS frames concatenate)."""
    return (
        b"".join(f[SSE_CHUNKED] for f in items),
        b"".join(f[SSE_RAW] for f in items),
        b"".join(f[WS] for f in items),
    )


def _price_frames(tick: Tick) -> Frames:
    return encode("price", tick.to_json(), tick.id)


def _bound_kernel_buffer(transport: Transport, cap: int) -> None:
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
