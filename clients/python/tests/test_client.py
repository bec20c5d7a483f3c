"""FeedClient against the real daemon on loopback: ticks, snapshot, resume, resync, errors."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bittrade_feed_client import (
    FeedClient,
    GaveUp,
    ProtocolError,
    RequestRejected,
    State,
    StateChange,
    Tick,
    Unauthorized,
    backoff_delay,
    stream_url,
)

WAIT = 5.0
"""Upper bound for anything that should happen at once; tests finish long before."""
TOKEN = "s3cret"  # noqa: S105 (a test value)


async def take(feed: FeedClient, n: int) -> list[Tick]:
    """The next ``n`` ticks (or fail after ``WAIT`` seconds)."""
    out: list[Tick] = []
    async with asyncio.timeout(WAIT):
        async for tick in feed:
            out.append(tick)
            if len(out) == n:
                break
    return out


async def test_snapshot_then_live_ticks_are_typed(daemon) -> None:
    """The stored price arrives first, then each new one, as frozen typed ticks."""
    async with FeedClient(daemon.url, pairs=[daemon.pair]) as feed:
        [first] = await take(feed, 1)
        await daemon.tick("73500.25")
        [second] = await take(feed, 1)
    assert first.price == Decimal("73380.5")
    assert (second.id, second.pair) == (first.id + 1, daemon.pair)
    assert second.price == Decimal("73500.25")
    assert second.ts.tzinfo is not None
    assert second.ts.utcoffset() == UTC.utcoffset(None)
    assert abs(second.ts - datetime.now(UTC)).total_seconds() < 60
    assert isinstance(second.sources, tuple)
    assert second.sources
    with pytest.raises(AttributeError):
        second.price = Decimal(0)  # type: ignore[misc]


async def test_latest_without_iterating(daemon, eventually) -> None:
    """latest() follows the stream even when nobody iterates."""
    async with FeedClient(daemon.url) as feed:
        await eventually(lambda: feed.latest(daemon.pair) is not None)
        new_id = await daemon.tick("73111")
        await eventually(lambda: feed.latest(daemon.pair.lower()).id == new_id)
        assert feed.latest(daemon.pair).price == Decimal("73111")
    assert feed.state is State.CLOSED


async def wait_for(feed: FeedClient, state: State) -> None:
    """Return once ``feed`` is in ``state`` (fail after ``WAIT`` seconds)."""
    async with asyncio.timeout(WAIT), contextlib.aclosing(feed.states()) as changes:
        async for change in changes:
            if change.state is state:
                return


async def test_resume_across_daemon_restart_has_no_gap_and_no_duplicate(daemon_factory) -> None:
    """Ticks produced while the client is away are replayed from Last-Event-ID, once each."""
    daemon = await daemon_factory()
    await daemon.tick("73399.9")  # before it, the daemon says "no price yet" (stale)
    changes: list[StateChange] = []
    async with FeedClient(daemon.url, pairs=[daemon.pair], on_state=changes.append) as feed:
        await wait_for(feed, State.LIVE)
        for i in range(5):
            await daemon.tick(f"73400.{i}")
        await daemon.stop()
        await daemon.open()
        for i in range(5):
            await daemon.tick(f"73500.{i}")
        # Made before the new daemon listens: only a replay can bring them.
        assert feed.state is State.RECONNECTING
        await daemon.listen()
        await wait_for(feed, State.LIVE)
        for i in range(5):
            last = await daemon.tick(f"73600.{i}")
        ticks = await take(feed, last)
        assert feed.last_event_id == last
    assert [t.id for t in ticks] == list(range(1, 17))
    assert [c.state for c in changes] == [
        State.LIVE,
        State.RECONNECTING,
        State.LIVE,
        State.CLOSED,
    ]


async def test_resync_replaces_snapshot_and_restarts_the_id_filter(daemon) -> None:
    """A resume point the daemon cannot serve gets a resync; later lower ids still flow."""
    async with FeedClient(daemon.url, last_event_id=10_000) as feed:
        [snap] = await take(feed, 1)
        assert feed.latest(daemon.pair) == snap
        await daemon.tick("73999")
        [after] = await take(feed, 1)
    assert snap.id == 1
    assert after.id == 2


async def test_duplicate_and_old_ids_are_dropped(scripted) -> None:
    """An event whose id is not above the last one seen is never yielded."""
    body = b"".join(scripted.price(i) for i in (1, 2, 2, 1, 3))
    script = await scripted.start(scripted.stream(body, hold=1))
    async with FeedClient(script.url) as feed:
        ticks = await take(feed, 3)
    assert [t.id for t in ticks] == [1, 2, 3]


async def test_token_is_sent_as_bearer_and_401_stops_with_unauthorized(scripted) -> None:
    """A refused token ends the subscription with Unauthorized and the daemon's detail."""
    problem = '{"status":401,"detail":"token expired; ask for a new one"}'
    script = await scripted.start(scripted.answer(401, problem))
    async with FeedClient(script.url, token=TOKEN) as feed:
        with pytest.raises(Unauthorized) as caught:
            await take(feed, 1)
    assert script.requests[0]["Authorization"] == f"Bearer {TOKEN}"
    assert caught.value.detail == "token expired; ask for a new one"
    assert feed.state is State.CLOSED
    assert feed.error is caught.value
    assert len(script.requests) == 1


async def test_403_is_unauthorized_too(scripted) -> None:
    """403 is as permanent as 401."""
    script = await scripted.start(scripted.answer(403, "forbidden", "text/plain"))
    async with FeedClient(script.url) as feed:
        with pytest.raises(Unauthorized, match="403: forbidden"):
            await take(feed, 1)


async def test_204_ends_iteration_cleanly(scripted) -> None:
    """The daemon's 204 stops the client: iteration ends, no error, no reconnect."""
    script = await scripted.start(scripted.answer(204))
    async with FeedClient(script.url) as feed:
        assert await take(feed, 1) == []
    assert feed.state is State.CLOSED
    assert feed.error is None
    assert "204" in feed.reason
    assert len(script.requests) == 1


async def test_bad_pair_raises_with_the_daemon_detail(daemon) -> None:
    """Another 4xx is permanent: the daemon's problem detail names what to fix."""
    async with FeedClient(daemon.url, pairs=["NOPE-USD"]) as feed:
        with pytest.raises(RequestRejected, match="unknown pair 'NOPE-USD'") as caught:
            await take(feed, 1)
    assert caught.value.status == 400


async def test_a_200_that_is_not_an_event_stream_fails(daemon) -> None:
    """Per the EventSource rules a 200 of another content type is not retried."""
    async with FeedClient(daemon.url + "/healthz") as feed:
        with pytest.raises(ProtocolError, match="application/json"):
            await take(feed, 1)


async def test_5xx_is_retried_honouring_retry_after(scripted) -> None:
    """A 503 is transient: the client waits at least Retry-After, then connects."""
    busy = scripted.answer(503, '{"detail":"subscriber limit reached"}')
    script = await scripted.start(busy, scripted.stream(scripted.price(7), hold=1))
    changes = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with FeedClient(script.url, reconnect_delay=0.01, on_state=changes.append) as feed:
        [tick] = await take(feed, 1)
    assert tick.id == 7
    assert [c.state for c in changes] == [State.RECONNECTING, State.LIVE, State.CLOSED]
    assert "subscriber limit reached" in changes[0].reason
    assert len(script.requests) == 2
    assert loop.time() - started < 1


async def test_retry_in_the_first_event_block_is_both_a_tick_and_a_reconnect_delay(
    scripted,
) -> None:
    """``retry:`` sharing the block of the first price: the tick arrives, the delay is kept."""
    first = b"retry: 50\n" + scripted.price(7)
    script = await scripted.start(
        scripted.stream(first), scripted.stream(scripted.price(8), hold=1)
    )
    async with FeedClient(script.url, reconnect_delay=5) as feed:
        ticks = await take(feed, 2)
    assert [t.id for t in ticks] == [7, 8]
    assert len(script.requests) == 2, "reconnected after 50 ms, not the 5 s default"


async def test_gives_up_after_max_attempts(unused_tcp_port: int) -> None:
    """max_attempts failed connections in a row end the subscription with GaveUp."""
    url = f"http://127.0.0.1:{unused_tcp_port}"
    async with FeedClient(url, reconnect_delay=0.01, max_attempts=3) as feed:
        with pytest.raises(GaveUp, match="3 failed attempts"):
            await take(feed, 1)


def test_backoff_has_the_server_retry_as_floor_and_grows_with_jitter() -> None:
    """Full jitter above the floor; the ceiling doubles per failure up to the cap."""
    assert backoff_delay(0, 3.0, 30.0, rand=lambda: 0.0) == 3.0
    assert backoff_delay(0, 3.0, 30.0, rand=lambda: 1.0) == 6.0
    assert backoff_delay(2, 3.0, 30.0, rand=lambda: 1.0) == 15.0
    assert backoff_delay(10_000, 3.0, 30.0, rand=lambda: 1.0) == 33.0
    delays = {backoff_delay(3, 0.1, 30.0) for _ in range(50)}
    assert len(delays) > 40
    assert all(0.1 <= d <= 0.9 for d in delays)


def test_stream_url_accepts_a_base_url_and_refuses_non_http() -> None:
    """A bare daemon URL gets the stream path; anything but http(s) is a ValueError."""
    assert stream_url("http://feed:8080") == "http://feed:8080/api/price-stream"
    assert stream_url("https://feed/x/api/price-stream") == "https://feed/x/api/price-stream"
    for bad in ("feed:8080", "ftp://feed/", "http://", "http://[::1"):
        with pytest.raises(ValueError, match="not an http"):
            stream_url(bad)
