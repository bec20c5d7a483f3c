"""The broadcast hub: every tick is encoded once and written to every subscriber.

The same frame objects (``wire``) go to ``transport.write`` of each subscriber: no
per-subscriber encoding, task, queue or await on the broadcast path. After every write a
subscriber past ``max_buffer_bytes`` unsent is aborted (``slow``). Order is enforced, not
trusted: each subscriber gets only ids above the last one written to it; a tick that skips
ids becomes a ``resync`` to everyone; a resume registers before any await and holds its
live events until the replay is written, so the hand-over has no gap by construction.
One shared timer sends heartbeats and retires streams past their (jittered) lifetime or
their credential's expiry; the latter, and a revoked credential, get a ``reauth`` event
before the close, so the client logs in again and resumes with its Last-Event-ID.
The inputs are ``publish(tick)``, ``publish_status(status)`` and
``publish_alert(owner, firing)`` (alert events, by owner: ``broadcast.alerts``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from bittrade_feed.broadcast.alerts import AlertEvent, AlertFeed, AlertSource
from bittrade_feed.broadcast.registry import (
    Full,
    Limited,
    Registry,
    Slot,
    Subscriber,
    Transport,
    bound_kernel_buffer,
    expiry,
)
from bittrade_feed.broadcast.replay import (
    Events,
    Known,
    Need,
    Replay,
    Resync,
    Ring,
    decide,
    from_store,
)
from bittrade_feed.broadcast.wire import (
    BLOCK_END,
    FORMATS,
    HEARTBEATS,
    Frames,
    WireFormat,
    encode,
    join,
    price_frames,
    retry_frames,
)
from bittrade_feed.clock import Clock
from bittrade_feed.config import StreamConfig
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.ops.metrics import Metrics

__all__ = ["Full", "Hub", "Limited", "Slot", "Subscriber"]

log = structlog.get_logger("bittrade_feed.broadcast.hub")

REAUTH_REASONS = ("expired", "revoked")
"""Close reasons that tell the client to refresh its credential (a ``reauth`` event)."""
REAUTH_FRAMES = {reason: encode("reauth", {"reason": reason}) for reason in REAUTH_REASONS}

TIMER_PERIOD = 1.0
"""The timer's resolution: a heartbeat goes out 0-1 s after ``stream.heartbeat`` of idleness."""


class Hub:
    """Subscribers, the replay ring, and the broadcast."""

    def __init__(
        self, config: StreamConfig, clock: Clock, metrics: Metrics, replay: Replay
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.replay = replay
        self._known = Known()
        self.latest = self._known.ticks
        """The latest tick of each pair (read by the fetcher and the status line)."""
        self.statuses = self._known.statuses
        self.max_id = 0
        self._ring = Ring(config.replay_limit)
        self._subs = Registry(config, clock.monotonic)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, int, Frames]] = []
        """The coalescing window: (pair, id or 0, frames) in publish order."""
        self._flush_handle: asyncio.TimerHandle | None = None
        self.still_valid: Callable[[str], bool] = _always
        """Whether a stream's credential may go on; the auth layer sets it (key revocation)."""
        self.run_callback: Callable[[str, Callable[[], None]], None] = _call_now
        """Runs the timer callbacks the hub schedules; the app's supervisor reports a raise."""
        self._retry = retry_frames(config.retry_ms)
        self.ahead_wait = 0.0
        """Seconds a resume point above ``max_id`` waits for this hub to reach it before the
        ``resync``; 0 (a single daemon) resyncs at once. In a cluster another daemon may
        already have sent the client ids this one's follower is about to apply."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        """(id, future) of resumes waiting for ``max_id`` to reach that id."""
        # Labelled children looked up once: .labels() costs microseconds per call.
        self._m_events = [metrics.events_sent.labels(f.transport) for f in FORMATS]
        self._m_bytes = [metrics.bytes_sent.labels(f.transport) for f in FORMATS]
        self._m_opened = [metrics.connections_opened.labels(f.transport) for f in FORMATS]
        self._m_subscribers = [metrics.subscribers.labels(f.transport) for f in FORMATS]
        self._m_dropped = metrics.events_dropped.labels("subscriber")
        self._alerts = AlertFeed(self._subs, self._write, self.close, clock, self._m_dropped.inc)

    # -- set-up -------------------------------------------------------------

    def load(self, recent: Sequence[Tick], latest: dict[str, Tick], max_id: int) -> None:
        """Seed the ring and snapshot from the store at start-up (``recent`` oldest first)."""
        in_ring = self._ring.load(recent, max_id, self.replay.history_floor)
        self.max_id = max_id
        for tick in latest.values():
            self._known.set_tick(tick, in_ring.get(tick.id) or price_frames(tick))

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
        """Hand a stored tick to every subscriber of its pair (ticks come in id order)."""
        if tick.id <= self.max_id:
            self.metrics.events_dropped.labels("publish").inc()
            log.warning("tick dropped", id=tick.id, max_id=self.max_id, why="not above max_id")
            return
        expected = self.max_id + 1
        frames = price_frames(tick)
        self._known.set_tick(tick, frames)
        self.max_id = tick.id
        if self._waiters:
            self._wake_waiters()
        if tick.id == expected:
            self._ring.append(tick, frames)
            self._broadcast(tick.pair, tick.id, frames)
            return
        # Nobody can fill ids this hub never saw: say so to everyone, once.
        missing = f"{expected}" if expected == tick.id - 1 else f"{expected}-{tick.id - 1}"
        log.warning("tick id gap", missing=missing, id=tick.id)
        self.metrics.tick_gaps.inc()
        self._ring.reset(tick.id - 1)
        self._ring.append(tick, frames)
        self.flush()
        self._resync_all(Resync("gap", f"events {missing} never reached this daemon"))

    def publish_status(self, status: FeedStatus) -> None:
        """Tell every subscriber of the pair that it went stale or live again (no id)."""
        frames = encode("status", status.to_json())
        self._known.set_status(status, frames)
        self._broadcast(status.pair, 0, frames)

    def publish_alert(self, owner: str, firing: AlertEvent) -> None:
        """Hand a committed firing to every stream of ``owner`` (cheap; never raises)."""
        self._alerts.note(firing.id)
        if owner not in self._subs.by_owner:
            return  # nobody of this owner is connected: nothing to encode or flush
        try:
            # Prices in the coalescing window go first: a firing follows the tick behind it.
            self.flush()
            self._alerts.publish(owner, firing)
        except Exception:
            # The caller is the alert engine's commit path: a fault here must not undo it.
            log.exception("alert event not written to streams", owner=owner, id=firing.id)

    def set_alert_source(self, source: AlertSource | None, latest: int | None = None) -> None:
        """Where resumes (``alerts_after``) read stored firings (``None``: nowhere), and, if
        known, the highest firing id that exists (opening streams are told their resume
        point only once it is known: ``alerts_known``)."""
        self._alerts.source = source
        if latest is not None:
            self._alerts.known(latest)

    def alerts_known(self, latest: int) -> None:
        """The highest firing id that exists, read from the store after this hub was
        already following new firings (so none above it can be missed)."""
        self._alerts.known(latest)

    @property
    def alert_latest(self) -> int | None:
        """The highest firing id known to exist (``None``: not known yet)."""
        return self._alerts.latest

    @property
    def alert_source(self) -> AlertSource | None:
        """The resume reader ``set_alert_source`` gave (``None``: none)."""
        return self._alerts.source

    def _broadcast(self, pair: str, event_id: int, frames: Frames) -> None:
        if not self.config.coalesce_ms:
            groups = self._subs.by_pair.get(pair)
            if groups:
                self._send(groups, [(event_id, frames)], frames)
            return
        # Coalescing: one write per subscriber per window instead of per event; each
        # send() costs ~10 us of kernel time, so at high tick rates this halves the CPU.
        self._pending.append((pair, event_id, frames))
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(
                self.config.coalesce_ms / 1000, self.run_callback, "hub-flush", self.flush
            )

    def flush(self) -> None:
        """Send what the coalescing window has collected (a no-op when nothing waits).

        Subscribers are grouped by pair set, so each set's events are joined once, in
        publish order: a subscriber of several pairs gets them in global id order.
        """
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        touched = {pair for pair, _, _ in pending}
        for key, groups in list(self._subs.by_set.items()):
            if key.isdisjoint(touched):
                continue
            events = [(i, f) for pair, i, f in pending if pair in key]
            joined = events[0][1] if len(events) == 1 else join([f for _, f in events])
            self._send(groups, events, joined)

    def _send(self, groups: tuple[set[Subscriber], ...], events: Events, joined: Frames) -> None:
        """Write ``events`` (already ``joined``) to each subscriber that has no id of them."""
        started = self.clock.monotonic()
        cap = self.config.max_buffer_bytes
        first = next((i for i, _ in events if i), 0)
        last = max(i for i, _ in events)
        gone: list[tuple[Subscriber, str]] = []
        for fmt in FORMATS:
            subs = groups[fmt]
            if not subs:
                continue
            data = joined[fmt]
            whole = sent = 0
            for sub in subs:
                transport = sub.transport
                if sub.buffer is not None:
                    sub.buffer.extend(events)  # its opening is still being fetched
                    continue
                if transport.is_closing():
                    gone.append((sub, "client"))
                    continue
                if not first or first > sub.last_id:
                    transport.write(data)
                    whole += 1
                else:
                    sent += self._write_newer(sub, events)
                sub.last_id = max(sub.last_id, last)
                sub.last_write = started
                if transport.get_write_buffer_size() > cap:
                    gone.append((sub, "slow"))
            self._m_events[fmt].inc(whole * len(events) + sent)
            self._m_bytes[fmt].inc(whole * len(data))
        for sub, reason in gone:
            self.close(sub, reason)
        self.metrics.broadcast_duration.observe(self.clock.monotonic() - started)

    def _write_newer(self, sub: Subscriber, events: Events) -> int:
        """The rare path: write only the events above the subscriber's last id."""
        keep = [f for i, f in events if not i or i > sub.last_id]
        self._m_dropped.inc(len(events) - len(keep))
        if keep:
            data = b"".join(f[sub.fmt] for f in keep)
            sub.transport.write(data)
            self._m_bytes[sub.fmt].inc(len(data))
        return len(keep)

    def _write(self, sub: Subscriber, data: bytes, events: int) -> None:
        """One write outside the broadcast (opening, resync, heartbeat), cap checked."""
        if not data or sub.done.done():
            return
        if sub.transport.is_closing():
            self.close(sub, "client")  # gone while its opening was fetched
            return
        sub.transport.write(data)
        sub.last_write = self.clock.monotonic()
        self._m_events[sub.fmt].inc(events)
        self._m_bytes[sub.fmt].inc(len(data))
        if sub.transport.get_write_buffer_size() > self.config.max_buffer_bytes:
            self.close(sub, "slow")

    # -- subscribers ----------------------------------------------------------

    @property
    def count(self) -> int:
        """Subscribers attached now."""
        return len(self._subs)

    @property
    def admitted(self) -> int:
        """Connections holding a slot under ``max_subscribers`` (attached or opening)."""
        return self._subs.admitted

    def admit(self, address: str = "", credential: str = "") -> Slot:
        """Reserve a connection's slot, or raise ``Full`` or ``Limited``; pair with
        ``release`` in a finally (``Registry.admit`` has the limits)."""
        return self._subs.admit(address, credential)

    def release(self, slot: Slot) -> None:
        """Give a connection's slot back (idempotent)."""
        self._subs.release(slot)

    async def subscribe(
        self,
        slot: Slot,
        transport: Transport,
        fmt: WireFormat,
        pairs: tuple[str, ...],
        last_id: int | None,
        *,
        credential: str = "",
        until: float | None = None,
        owner: str | None = None,
        alerts_after: int | None = None,
        alert_cursor: int = 0,
    ) -> Subscriber:
        """Attach a subscriber and write its opening (snapshot, replay or resync).

        ``slot`` comes from ``admit``. ``credential`` and ``until`` (wall-clock expiry)
        come from the principal: the stream gets ``reauth`` and is closed at ``until`` (or
        at once, if its credential was revoked while the request was on its way here).
        The subscriber is registered before the optional store query; live events
        meanwhile are held and written after the replay, those above the replay's last id
        only. SSE openings begin with the ``retry:`` line.

        With an ``owner`` it gets that owner's ``alert`` events: after the price opening,
        with ``alerts_after``, the stored firings above it, then live ones. Only ids above
        ``alert_cursor`` and ``alerts_after`` are written (a resubscribe passes the old
        stream's ``alert_id``, so no alert is repeated or lost across it).
        """
        if slot.released:
            raise ValueError("subscribe needs a slot from admit() that is not released")
        # Events still in the coalescing window go to the current subscribers first; the
        # newcomer's opening already contains them (they are in the ring or the store).
        self.flush()
        now = self.clock.monotonic()
        cursor = max(alert_cursor, alerts_after or 0)
        sub = Subscriber(
            transport,
            fmt,
            pairs,
            now,
            expiry(now, self.config.max_lifetime),
            credential,
            owner,
            cursor,
        )
        if until is not None:
            # Wall-clock expiry onto the monotonic timer; the earlier deadline wins.
            deadline = now + (until - self.clock.time())
            if deadline < sub.expires:
                sub.expires, sub.ends = deadline, "expired"
        bound_kernel_buffer(transport, self.config.max_buffer_bytes)
        self._subs.add(sub)
        self._m_opened[fmt].inc()
        self._m_subscribers[fmt].inc()
        if credential and not self.still_valid(credential):
            # Checked when it registers, with no await since: a revocation that ran while
            # this request was being authenticated cannot miss it.
            self.close(sub, "revoked")
            return sub
        await self._open_prices(sub, last_id)
        if sub.owner is not None and sub in self._subs:
            try:
                await self._alerts.catch_up(sub, alerts_after)
            except BaseException:
                self.detach(sub, "client")
                raise
        return sub

    async def _open_prices(self, sub: Subscriber, last_id: int | None) -> None:
        """Write the price opening: snapshot, ring or store replay, or resync."""
        pairs = sub.pairs
        plan = decide(last_id, self.max_id, self._ring, self.replay.history_floor, pairs)
        if isinstance(plan, Resync) and plan.label == "ahead" and self.ahead_wait > 0:
            assert last_id is not None
            waited = await self._wait_until_caught_up(sub, last_id)
            if waited is None:
                return  # closed while it waited (shutdown)
            plan = waited
        held = self._take_held(sub)
        if sub.gap is not None:
            # A gap in the input while it waited: nobody can replay across it.
            plan = Resync("gap", sub.gap)
        if plan is Need.SNAPSHOT:
            self._open(sub, self._known.snapshot(pairs) + self._known.status_events(pairs))
        elif plan is Need.STORE:
            assert last_id is not None
            resync = await self._open_from_store(sub, last_id)
            self.metrics.resumes.labels("resync" if resync else "sqlite").inc()
        elif isinstance(plan, Resync):
            self._open(sub, self._resync_events(sub, plan) + self._known.status_events(pairs))
            self.metrics.resumes.labels("resync").inc()
        else:
            after = plan[-1][0] if plan else last_id or 0
            self._open(sub, plan + self._known.status_events(pairs) + _newer(held, after))
            self.metrics.resumes.labels("ring").inc()

    async def _wait_until_caught_up(
        self, sub: Subscriber, last_id: int
    ) -> Need | Resync | Events | None:
        """Hold ``sub``'s live events until ``max_id`` reaches ``last_id`` or ``ahead_wait``
        passes; then the opening to write (``None``: ``sub`` was closed meanwhile).

        Only this connection waits (its slot is already counted); the broadcast treats it
        as any subscriber whose opening is still being prepared.
        """
        sub.buffer = []
        done = asyncio.get_running_loop().create_future()
        waiter = (last_id, done)
        self._waiters.append(waiter)
        timeout = asyncio.ensure_future(self.clock.sleep(self.ahead_wait))
        try:
            await asyncio.wait((done, timeout), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self.detach(sub, "client")
            raise
        finally:
            timeout.cancel()
            done.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if sub not in self._subs:
            return None
        # Events still in the coalescing window reach the held buffer first, as at the top
        # of subscribe; the plan below covers them and the held copies are dropped.
        self.flush()
        self.metrics.resumes_waited.labels("caught_up" if self.max_id >= last_id else "late").inc()
        return decide(last_id, self.max_id, self._ring, self.replay.history_floor, sub.pairs)

    def _wake_waiters(self) -> None:
        """Wake every resume waiting for an id at or below ``max_id`` (rare: not per tick)."""
        for target, done in self._waiters:
            if target <= self.max_id and not done.done():
                done.set_result(None)

    def _take_held(self, sub: Subscriber) -> Events:
        """The live events held while ``sub`` waited (none unless it waited)."""
        held, sub.buffer = sub.buffer or [], None
        return held

    async def _open_from_store(self, sub: Subscriber, last_id: int) -> bool:
        """Replay from the store, or resync; ``True`` if it had to resync."""
        sub.buffer = []  # events held while it waited to catch up are covered by the rows
        statuses = self._known.status_events(sub.pairs)
        limit = self.config.replay_limit
        try:
            rows = await self.replay.since_id(last_id, sub.pairs, limit + 1)
        except BaseException:
            self.detach(sub, "client")
            raise
        held, sub.buffer = sub.buffer, None
        if sub not in self._subs:
            return False  # closed while the query ran (shutdown)
        plan = from_store(last_id, rows, self.replay.history_floor, limit)
        if sub.gap is not None or isinstance(plan, Resync):
            why = plan if isinstance(plan, Resync) else Resync("gap", sub.gap or "")
            self._open(sub, self._resync_events(sub, why) + self._known.status_events(sub.pairs))
            return True
        after = plan[-1][0] if plan else last_id
        self._open(sub, plan + statuses + _newer(held, after))
        return False

    def _open(self, sub: Subscriber, events: Events) -> None:
        """Write the opening as one write, the retry line first on SSE."""
        fmt = sub.fmt
        if not events and fmt == WireFormat.WS:
            return
        head = self._retry[fmt]
        body = b"".join(f[fmt] for _, f in events) if events else BLOCK_END[fmt]
        sub.last_id = max([sub.last_id, *(i for i, _ in events)])
        # Not counted in events_sent, which counts live events (as before the split).
        self._write(sub, head + body, 0)

    def _resync_events(self, sub: Subscriber, why: Resync) -> Events:
        """One resync event with the latest snapshot of ``sub``'s pairs, counted."""
        self.metrics.resyncs.labels(why.label).inc()
        return [self._known.resync(sub.pairs, why.reason)]

    def _resync_all(self, why: Resync) -> None:
        """One resync to every subscriber, encoded once per pair set."""
        for key, groups in list(self._subs.by_set.items()):
            event_id, frames = self._known.resync(key, why.reason)
            for fmt in FORMATS:
                for sub in list(groups[fmt]):
                    if sub.buffer is not None:
                        sub.gap = why.reason  # its opening becomes this resync
                        continue
                    self.metrics.resyncs.labels(why.label).inc()
                    sub.last_id = max(sub.last_id, event_id)
                    self._write(sub, frames[fmt], 1)

    def close(self, sub: Subscriber, reason: str) -> None:
        """Detach a subscriber and wake its handler; ``slow`` ones are aborted at once."""
        if sub.done.done():
            return
        if reason == "slow":
            # Its unsent bytes are the problem: drop them instead of waiting to flush.
            sub.transport.abort()
        elif reason in REAUTH_REASONS:
            self._write(sub, REAUTH_FRAMES[reason][sub.fmt], 1)
            if sub.done.done():  # the write found it gone or too slow, and closed it
                return
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

    def revoke(self) -> int:
        """Close, with ``reauth``, every stream whose credential is no longer valid."""
        gone = [s for s in self._subs.all() if s.credential and not self.still_valid(s.credential)]
        for sub in gone:
            self.close(sub, "revoked")
        return len(gone)

    def close_all(self, reason: str) -> None:
        """Close every stream (shutdown); resumes waiting to catch up stop waiting."""
        for sub in self._subs.all():
            self.close(sub, reason)
        for _, done in self._waiters:
            if not done.done():
                done.set_result(None)

    def subscribers(self) -> list[Subscriber]:
        """Every attached subscriber (each once)."""
        return self._subs.all()

    # -- the shared timer -----------------------------------------------------

    async def run_timer(self) -> None:
        """The shared timer: ``tick_timer`` about every second, for ever."""
        # A short period keeps the heartbeat's delay within heartbeat..heartbeat+1 s.
        period = min(TIMER_PERIOD, self.config.heartbeat / 3)
        while True:
            await self.clock.sleep(period)
            self.tick_timer()

    def tick_timer(self) -> None:
        """Heartbeat idle subscribers, retire expired ones, forget dead ones."""
        now = self.clock.monotonic()
        idle_before = now - self.config.heartbeat
        for sub in self.subscribers():
            if sub.transport.is_closing():
                self.close(sub, "client")
            elif now >= sub.expires:
                self.close(sub, sub.ends)
            elif sub.last_write <= idle_before and sub.buffer is None:
                self._write(sub, HEARTBEATS[sub.fmt], 0)


def _newer(held: Events, after: int) -> Events:
    """Held live events the opening does not already cover (status events always)."""
    return [(i, f) for i, f in held if not i or i > after]


def _call_now(name: str, callback: Callable[[], None]) -> None:
    callback()


def _always(credential: str) -> bool:
    return True
