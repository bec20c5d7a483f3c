"""The async subscription: ``async with FeedClient(url) as feed: async for tick in feed``.

One background task owns the connection. It connects, parses, keeps the per-pair
snapshot and the connection state current, queues ticks for the iterator, and
reconnects with backoff when the connection drops, resuming from the last event id, so
callers see neither gaps nor duplicates across a daemon restart. The same connection
carries the owner's alert events (``alerts()``), resumed by the highest alert id seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp

from bittrade_feed_client._version import __version__
from bittrade_feed_client.connection import (
    NO_TIMEOUT,
    Drop,
    backoff_delay,
    describe,
    normalise_pairs,
    refused,
    stream_url,
)
from bittrade_feed_client.credentials import Credentials, TokenProvider
from bittrade_feed_client.errors import AuthError, FeedError, GaveUp
from bittrade_feed_client.inbox import AlertInbox
from bittrade_feed_client.models import (
    SIMULATED_REASON,
    Alert,
    PairStatus,
    State,
    StateChange,
    Tick,
    simulated_pairs,
)
from bittrade_feed_client.sse import Event, EventStreamParser

log = logging.getLogger("bittrade_feed_client")
# A library leaves output to the application: without this, Python's last-resort handler
# would print every reconnect warning to stderr (and over the ticker's display).
log.addHandler(logging.NullHandler())

StateCallback = Callable[[StateChange], object]
REAUTH_PACE = 10.0
"""Seconds: a ``reauth`` this soon after the last one reconnects with backoff, not at once."""


class FeedClient:
    """A resilient subscription to a bittrade-feed daemon's price stream.

    ``url`` is the daemon's base URL or its stream URL; ``pairs`` limits the pairs
    (default: every pair the daemon serves). ``token`` (a JWT) or ``api_key`` (a
    ``btk_...`` key) is sent as ``Authorization: Bearer``; ``token_provider``, a plain
    or async callable returning a token, is asked for a new one before the first
    connection (when no token is given), after the daemon's ``reauth`` event, and once
    after a 401 (see ``credentials.py``). A 401 is otherwise final (``AuthError``), as is
    a 403 (``ForbiddenError``, naming the refused pairs).
    ``idle_timeout`` is how long silence may last before the connection is taken for
    dead (the daemon sends a heartbeat after about 15 s of silence). Until the server
    sends ``retry:`` the client waits ``reconnect_delay`` seconds before reconnecting;
    backoff grows up to ``max_delay`` more. ``max_attempts`` failed connection attempts
    in a row end the subscription with ``GaveUp`` (default: never give up).
    ``last_event_id`` resumes from an id a previous process saw.

    Alerts (``alerts()``) come over the same connection when the credential has the
    ``alerts`` scope. Every reconnect sends the highest alert id seen as
    ``alerts_after``, so the daemon sends the ones missed meanwhile; a repeated id is
    dropped. ``alerts_after`` resumes from an alert id a previous process saw (until an
    alert arrives, only alerts that fire from the first connection on are received).
    Unread alerts wait in a buffer of ``buffer``; past that the oldest are dropped.

    Ticks wait for the iterator in a buffer of ``buffer`` ticks; while you iterate, a
    full buffer pauses reading (the daemon replays what it then misses). If you never
    iterate and only call ``latest()``, the oldest ticks in it are dropped.
    """

    def __init__(
        self,
        url: str,
        pairs: Iterable[str] | None = None,
        token: str | None = None,
        *,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
        idle_timeout: float = 45.0,
        connect_timeout: float = 10.0,
        reconnect_delay: float = 3.0,
        max_delay: float = 30.0,
        max_attempts: int | None = None,
        last_event_id: int | None = None,
        alerts_after: int | None = None,
        on_state: StateCallback | None = None,
        session: aiohttp.ClientSession | None = None,
        buffer: int = 1024,
    ) -> None:
        self.url = stream_url(url)
        self.pairs = normalise_pairs(pairs)
        if min(idle_timeout, connect_timeout) <= 0 or min(reconnect_delay, max_delay) < 0:
            raise ValueError("timeouts must be positive and delays non-negative")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None for no limit)")
        if buffer < 1:
            raise ValueError("buffer must hold at least one tick")
        if alerts_after is not None and alerts_after < 0:
            raise ValueError("alerts_after must be an alert id (0 or more), or None")
        self._credentials = Credentials(token, api_key, token_provider, connect_timeout)
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_delay = reconnect_delay
        self._max_delay = max_delay
        self._max_attempts = max_attempts
        self._on_state = on_state
        self._session = session
        self._own_session = session is None
        self._buffer = buffer

        self._parser = EventStreamParser(str(last_event_id) if last_event_id else "")
        self._last_id = last_event_id or 0
        """Highest tick id handed out: anything at or below it is a duplicate."""
        self._inbox = AlertInbox(alerts_after, buffer)
        self._latest: dict[str, Tick] = {}
        self._statuses: dict[str, PairStatus] = {}
        self._state = State.CONNECTING
        self._reason = "not started"
        self._error: FeedError | None = None
        self._watchers: list[asyncio.Queue[StateChange]] = []
        self._ticks: deque[Tick] = deque()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._iterating = False
        self._finished = False
        self._task: asyncio.Task[None] | None = None

    # -- what callers read ------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection state now."""
        return self._state

    @property
    def reason(self) -> str:
        """Why the connection is in its current state (when live: empty, or simulated)."""
        return self._reason

    @property
    def can_trade(self) -> bool:
        """Live, and no price is simulated: check it before acting on a price."""
        return self._state is State.LIVE and not simulated_pairs(self._latest, self._statuses)

    @property
    def error(self) -> FeedError | None:
        """The permanent error that closed the subscription, if any."""
        return self._error

    @property
    def last_event_id(self) -> int | None:
        """The resume point a reconnect would send (``None`` before the first event)."""
        raw = self._parser.last_event_id
        return int(raw) if raw.isascii() and raw.isdigit() else None

    @property
    def last_alert_id(self) -> int | None:
        """The highest alert id received: what a reconnect sends as ``alerts_after``."""
        return self._inbox.last_id

    def latest(self, pair: str) -> Tick | None:
        """The newest price received for ``pair``, without iterating."""
        return self._latest.get(pair.strip().upper())

    def status(self, pair: str) -> PairStatus | None:
        """What the daemon last said about ``pair`` (its latest ``status`` event)."""
        return self._statuses.get(pair.strip().upper())

    async def states(self) -> AsyncIterator[StateChange]:
        """The current state, then every change, ending after ``CLOSED``."""
        queue: asyncio.Queue[StateChange] = asyncio.Queue()
        queue.put_nowait(StateChange(self._state, self._reason))
        self._watchers.append(queue)
        try:
            while True:
                change = await queue.get()
                yield change
                if change.state is State.CLOSED:
                    return
        finally:
            self._watchers.remove(queue)

    async def alerts(self) -> AsyncIterator[Alert]:
        """Every alert of the credential's owner, each id once, in id order.

        Ends when the subscription does (raising its error, as iterating ticks does).
        Meant for one consumer: two iterators would share the alerts between them.
        """
        while (alert := await self._inbox.take()) is not None:
            yield alert
        if self._error is not None:
            raise self._error

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start connecting in the background (``async with`` does this)."""
        if self._finished:
            raise RuntimeError("this FeedClient is closed; make a new one")
        if self._task is None:
            self._reason = f"connecting to {self.url}"
            self._task = asyncio.create_task(self._run(), name=f"bittrade-feed {self.url}")

    async def aclose(self) -> None:
        """Stop the subscription and release the connection; idempotent."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._finish("closed by the caller")

    def __aiter__(self) -> Self:
        self._iterating = True
        return self

    async def __anext__(self) -> Tick:
        while not self._ticks:
            if self._finished:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        tick = self._ticks.popleft()
        self._room.set()
        return tick

    # -- the connection loop --------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        last_reauth = -math.inf
        reason = "closed by the caller"
        try:
            if self._credentials.needs_first_token:
                await self._credentials.refresh("no token yet")
            while True:
                try:
                    drop = await self._attempt()
                except AuthError as exc:
                    if not self._credentials.can_refresh():
                        raise
                    # Once per accepted token: a refused fresh one is final (no 401 loop).
                    self._set_state(State.RECONNECTING, f"{exc}; refreshing the token")
                    await self._credentials.refresh(str(exc))
                    continue
                if drop is None:
                    reason = "the daemon ended the stream (HTTP 204)"
                    break
                if drop.reauth:
                    await self._credentials.refresh(f"reauth ({drop.reauth})")
                    now = time.monotonic()
                    immediate, last_reauth = now - last_reauth >= REAUTH_PACE, now
                    if immediate:
                        # A planned handover: reconnect at once, resuming from the last id;
                        # a daemon that asks again within REAUTH_PACE waits for backoff.
                        self._set_state(State.RECONNECTING, drop.reason)
                        continue
                failures = 0 if drop.productive else failures + 1
                if self._max_attempts is not None and failures >= self._max_attempts:
                    raise GaveUp(f"gave up after {failures} failed attempts: {drop.reason}")
                delay = backoff_delay(failures, self._floor(), self._max_delay)
                if drop.retry_after is not None:
                    delay = max(delay, drop.retry_after)
                self._set_state(State.RECONNECTING, f"{drop.reason}; retrying in {delay:.2g} s")
                await asyncio.sleep(delay)
        except FeedError as exc:
            self._error = exc
            reason = str(exc)
        except Exception as exc:
            # A bug must reach the iterator, not end it as if the daemon had said stop.
            log.exception("feed task failed")
            self._error = FeedError(f"unexpected error: {exc!r}")
            self._error.__cause__ = exc
            reason = str(self._error)
        finally:
            self._finish(reason)

    def _floor(self) -> float:
        retry = self._parser.retry
        return self._reconnect_delay if retry is None else retry / 1000

    async def _attempt(self) -> Drop | None:
        """One connection, start to end; ``None`` when the daemon says stop (204)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        params = {"pairs": ",".join(self.pairs)} if self.pairs else {}
        if self._inbox.last_id is not None:
            # Every reconnect: the daemon then sends the alerts fired while we were away.
            params["alerts_after"] = str(self._inbox.last_id)
        try:
            async with asyncio.timeout(self._connect_timeout):
                resp = await self._session.get(
                    self.url, params=params, headers=self._headers(), timeout=NO_TIMEOUT
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Drop(describe(exc))
        try:
            if resp.status == 204:
                return None
            if resp.status != 200 or resp.content_type != "text/event-stream":
                return await refused(resp)
            self._credentials.accepted()
            return await self._read(resp)
        finally:
            # Close, not release: an unfinished stream cannot go back to the pool.
            resp.close()

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "User-Agent": f"bittrade-feed-client/{__version__}",
        }
        authorization = self._credentials.header
        if authorization is not None:
            headers["Authorization"] = authorization
        if self._parser.last_event_id:
            headers["Last-Event-ID"] = self._parser.last_event_id
        return headers

    async def _read(self, resp: aiohttp.ClientResponse) -> Drop:
        self._parser.reset()
        # Statuses are kept from the last connection: the daemon repeats them in its
        # opening, and until then a pair that was stale is not reported live.
        productive = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        chunk = await resp.content.readany()
                except TimeoutError:
                    # Not even a heartbeat: the connection is probably half-open.
                    silence = f"nothing received for {self._idle_timeout:g} s"
                    self._set_state(State.STALE, silence)
                    return Drop(silence, productive)
                if not chunk:
                    return Drop("the daemon closed the stream", productive)
                events = self._parser.feed(chunk)
                for event in events:
                    if event.type == "reauth":
                        # The daemon closes the stream next; nothing after it counts.
                        why = _reauth_reason(event.data)
                        return Drop(
                            f"the daemon asked for a new credential ({why})", True, None, why
                        )
                    await self._handle(event)
                if events:
                    # Decided per chunk, not per event: the opening snapshot and its
                    # status events arrive together, so a stale feed never flashes live.
                    productive = True
                    self._update_state()
        except (aiohttp.ClientError, OSError) as exc:
            return Drop(describe(exc), productive)

    async def _handle(self, event: Event) -> None:
        try:
            data = json.loads(event.data) if event.type in _JSON_EVENTS else None
            if event.type == "price":
                tick = Tick.from_json(data)
                if tick.id > self._last_id:
                    await self._deliver(tick)
            elif event.type == "status":
                status = PairStatus.from_json(data)
                self._statuses[status.pair] = status
            elif event.type == "resync":
                await self._resync(data)
            elif event.type == "alert":
                self._inbox.offer(Alert.from_json(data))
        except ValueError as exc:
            # One bad event should not end a subscription; a newer daemon may add fields.
            log.warning("ignored a malformed %s event: %s", event.type, exc)

    async def _resync(self, data: Any) -> None:
        """The daemon cannot replay what we missed: its snapshot replaces ours."""
        if not isinstance(data, dict) or not isinstance(data.get("ticks"), list):
            raise ValueError(f"not a resync: {data!r}")
        ticks = sorted((Tick.from_json(t) for t in data["ticks"]), key=lambda t: t.id)
        log.warning("resync: %s", data.get("reason", "no reason given"))
        self._latest = {}
        # The ids may even start over (a new database), so the duplicate filter does too.
        self._last_id = 0
        for tick in ticks:
            await self._deliver(tick)

    async def _deliver(self, tick: Tick) -> None:
        self._last_id = tick.id
        self._latest[tick.pair] = tick
        if len(self._ticks) >= self._buffer:
            if not self._iterating:
                self._ticks.popleft()
            while len(self._ticks) >= self._buffer:
                self._room.clear()
                await self._room.wait()
        self._ticks.append(tick)
        self._readable.set()

    # -- state -------------------------------------------------------------------------

    def _update_state(self) -> None:
        stale = [s for s in self._statuses.values() if s.state != "live"]
        if stale:
            self._set_state(
                State.STALE, "; ".join(f"{s.pair}: {s.reason or s.state}" for s in stale)
            )
        else:
            fake = simulated_pairs(self._latest, self._statuses)
            self._set_state(State.LIVE, SIMULATED_REASON if fake else "")

    def _set_state(self, state: State, reason: str) -> None:
        self._reason = reason
        if state is self._state:
            return
        self._state = state
        log.log(
            logging.WARNING if state in (State.STALE, State.RECONNECTING) else logging.INFO,
            "feed %s%s",
            state.value,
            f": {reason}" if reason else "",
        )
        change = StateChange(state, reason)
        for queue in self._watchers:
            queue.put_nowait(change)
        if self._on_state is not None:
            try:
                self._on_state(change)
            except Exception:
                log.exception("on_state callback failed")

    def _finish(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._set_state(State.CLOSED, reason)
        self._readable.set()
        self._inbox.close()


_JSON_EVENTS = frozenset({"price", "status", "resync", "alert"})


def _reauth_reason(data: str) -> str:
    """The ``reason`` of a ``reauth`` event (``expired``, ``revoked``); never empty."""
    with contextlib.suppress(ValueError, RecursionError):
        doc = json.loads(data)
        if isinstance(doc, dict) and isinstance(doc.get("reason"), str) and doc["reason"]:
            return str(doc["reason"])[:80]
    return "no reason given"
