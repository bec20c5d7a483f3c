"""The broadcast hub: every tick is encoded once and written to every subscriber.

The same frame object (``wire``) is handed to ``transport.write`` of each subscriber of
its pair: no per-subscriber encoding, task, queue or await on the broadcast path.
A subscriber whose unsent bytes pass ``max_buffer_bytes`` is aborted (``slow``), so one
stalled reader neither slows the others nor grows our memory.

One shared timer sends heartbeats to idle subscribers and retires connections past
their (jittered) lifetime. Resume: a ring of recent ticks (``replay``) answers most
reconnects without touching SQLite; older resume points fall back to the store; past
what can be replayed the client gets one ``resync`` event with the latest snapshot.

The hub's single input is ``publish(tick)`` / ``publish_status(status)``: ticks arrive
from the local fetcher today, from another daemon through Redis later.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

import structlog

from bittrade_feed.broadcast.registry import Registry, Subscriber, Transport, bound_kernel_buffer
from bittrade_feed.broadcast.replay import Replay, Ring
from bittrade_feed.broadcast.wire import (
    FORMATS,
    HEARTBEATS,
    Frames,
    WireFormat,
    encode,
    join,
    price_frames,
)
from bittrade_feed.clock import Clock
from bittrade_feed.config import StreamConfig
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.ops.metrics import Metrics

log = structlog.get_logger("bittrade_feed.broadcast.hub")


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
        self._ring = Ring(config.replay_limit)
        self._latest_frames: dict[str, Frames] = {}
        self._status_frames: dict[str, Frames] = {}
        self._subs = Registry()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._pending: dict[str, list[Frames]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.run_callback: Callable[[str, Callable[[], None]], None] = _call_now
        """Runs the timer callbacks the hub schedules; the app's supervisor reports a raise."""
        # Labelled children looked up once: .labels() costs microseconds per call.
        self._m_events = [metrics.events_sent.labels(f.transport) for f in FORMATS]
        self._m_bytes = [metrics.bytes_sent.labels(f.transport) for f in FORMATS]
        self._m_opened = [metrics.connections_opened.labels(f.transport) for f in FORMATS]
        self._m_subscribers = [metrics.subscribers.labels(f.transport) for f in FORMATS]

    # -- set-up -------------------------------------------------------------

    def load(
        self,
        recent: Sequence[Tick],
        latest: dict[str, Tick],
        max_id: int,
    ) -> None:
        """Seed the ring and snapshot from the store at start-up (``recent`` oldest first)."""
        in_ring = self._ring.load(recent, max_id)
        self.max_id = max_id
        for tick in latest.values():
            self.latest[tick.pair] = tick
            self._latest_frames[tick.pair] = in_ring.get(tick.id) or price_frames(tick)

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
        frames = price_frames(tick)
        self.latest[tick.pair] = tick
        self._latest_frames[tick.pair] = frames
        self.max_id = max(self.max_id, tick.id)
        self._ring.append(tick, frames)
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
            joined = items[0] if len(items) == 1 else join(items)
            self._send(pair, joined, len(items))

    def _send(self, pair: str, frames: Frames, events: int) -> None:
        groups = self._subs.by_pair.get(pair)
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
        return len(self._subs)

    def full(self) -> bool:
        """Whether a new subscriber must be refused."""
        return self.count >= self.config.max_subscribers

    async def subscribe(
        self,
        transport: Transport,
        fmt: WireFormat,
        pairs: tuple[str, ...],
        last_id: int | None,
    ) -> Subscriber:
        """Send the opening frames (snapshot, replay or resync) and attach the subscriber.

        After the optional store query nothing awaits, so no tick published meanwhile can
        fall between the replay and the live stream.
        """
        rows: list[Tick] | None = None
        min_id = 0
        if last_id is not None and self._ring.floor > last_id:
            rows = await self.replay.since_id(last_id, pairs, self.config.replay_limit + 1)
            min_id = await self.replay.min_id()
        # Events still in the coalescing window go to the current subscribers first; the
        # newcomer's opening already contains them (they are in the ring), so no duplicate.
        self.flush()
        opening = self._opening(pairs, last_id, rows, min_id)
        bound_kernel_buffer(transport, self.config.max_buffer_bytes)
        now = self.clock.monotonic()
        sub = Subscriber(transport, fmt, pairs, now, self._expiry(now))
        self._subs.add(sub)
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
                frames = [price_frames(t) for t in rows]
                after = rows[-1].id if rows else last_id
            frames += self._ring.after(after, pairs)
            if len(frames) > self.config.replay_limit:
                return self._resync(pairs, f"more than {self.config.replay_limit} events missed")
        return frames + self._statuses(pairs)

    def _latest_ticks(self, pairs: tuple[str, ...]) -> list[Tick]:
        """The latest tick of each pair that has one, in id order."""
        return sorted((self.latest[p] for p in pairs if p in self.latest), key=lambda t: t.id)

    def _snapshot(self, pairs: tuple[str, ...]) -> list[Frames]:
        # A price put in ``latest`` from outside (a pair added on reload) has no frames yet.
        ticks = self._latest_ticks(pairs)
        return [self._latest_frames.get(t.pair) or price_frames(t) for t in ticks]

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
        if sub not in self._subs:
            return
        self._subs.remove(sub)
        if not sub.done.done():
            sub.done.set_result(reason)
        self._m_subscribers[sub.fmt].dec()
        self.metrics.connections_closed.labels(sub.fmt.transport, reason).inc()

    def close_all(self, reason: str) -> None:
        """Close every stream (shutdown)."""
        for sub in self._subs.all():
            self.close(sub, reason)

    def subscribers(self) -> list[Subscriber]:
        """Every connected subscriber (each once)."""
        return self._subs.all()

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
        beats = [0 for _ in FORMATS]
        for sub in self.subscribers():
            transport = sub.transport
            if transport.is_closing():
                self.close(sub, "client")
            elif now >= sub.expires:
                self.close(sub, "lifetime")
            elif sub.last_write <= idle_before:
                transport.write(HEARTBEATS[sub.fmt])
                sub.last_write = now
                beats[sub.fmt] += 1
                if transport.get_write_buffer_size() > self.config.max_buffer_bytes:
                    self.close(sub, "slow")
        for fmt in FORMATS:
            if beats[fmt]:
                self._m_bytes[fmt].inc(beats[fmt] * len(HEARTBEATS[fmt]))


def _call_now(name: str, callback: Callable[[], None]) -> None:
    callback()
