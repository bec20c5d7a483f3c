"""Connection states against the real daemon: live, stale (said or silent), reconnecting."""

from __future__ import annotations

import asyncio
import contextlib

from bittrade_feed_client import SIMULATED_REASON, FeedClient, State, StateChange

from tests.daemon import PAIR
from tests.fakeclock import FakeClock

WAIT = 5.0


async def wait_for(feed: FeedClient, state: State) -> None:
    """Return once ``feed`` is in ``state`` (fail after ``WAIT`` seconds)."""
    async with asyncio.timeout(WAIT), contextlib.aclosing(feed.states()) as changes:
        async for change in changes:
            if change.state is state:
                return


async def test_stale_when_the_daemon_says_so_and_live_when_it_recovers(daemon_factory) -> None:
    """The daemon's status events drive STALE (with its reason) and LIVE again."""
    clock = FakeClock()
    daemon = await daemon_factory(clock=clock, feed={"stale_after": 1.0})
    await daemon.tick()
    changes: list[StateChange] = []
    async with FeedClient(daemon.url, on_state=changes.append) as feed:
        await wait_for(feed, State.LIVE)
        clock.jump(2)  # two seconds pass (both clocks): the price is now older than stale_after
        await daemon.fail()
        await wait_for(feed, State.STALE)
        assert feed.status(daemon.pair).state == "stale"
        await daemon.tick()
        await wait_for(feed, State.LIVE)
    assert [c.state for c in changes] == [State.LIVE, State.STALE, State.LIVE, State.CLOSED]
    assert "quorum" in changes[1].reason
    assert daemon.pair in changes[1].reason


async def test_connecting_to_a_stale_feed_never_shows_live(stale_daemon) -> None:
    """The opening snapshot and its stale status arrive together: no false LIVE."""
    changes: list[StateChange] = []
    async with FeedClient(stale_daemon.url, on_state=changes.append) as feed:
        await wait_for(feed, State.STALE)
    assert [c.state for c in changes] == [State.STALE, State.CLOSED]


async def test_silence_beyond_the_idle_timeout_is_stale_then_reconnects(daemon) -> None:
    """No event and no heartbeat within idle_timeout: STALE, reconnect, LIVE again."""
    seen: list[StateChange] = []
    feed = FeedClient(daemon.url, idle_timeout=0.3)
    async with feed, asyncio.timeout(WAIT), contextlib.aclosing(feed.states()) as changes:
        async for change in changes:
            seen.append(change)
            if len(seen) == 5:
                break
    assert [c.state for c in seen] == [
        State.CONNECTING,
        State.LIVE,
        State.STALE,
        State.RECONNECTING,
        State.LIVE,
    ]
    assert seen[2].reason == "nothing received for 0.3 s"


async def test_heartbeat_comments_keep_a_quiet_stream_live(scripted) -> None:
    """Comments count as traffic: a stream of heartbeats alone never turns stale."""
    heartbeats = [b": keep-alive\n\n"] * 6
    opening = b"retry: 10\n\n" + scripted.price(1)
    script = await scripted.start(
        scripted.stream(opening, *heartbeats, pause=0.1), scripted.answer(204)
    )
    changes: list[StateChange] = []
    async with FeedClient(script.url, idle_timeout=0.3, on_state=changes.append) as feed:
        async with asyncio.timeout(WAIT):
            assert [t.id async for t in feed] == [1]
    assert [c.state for c in changes] == [State.LIVE, State.RECONNECTING, State.CLOSED]
    assert changes[1].reason.startswith("the daemon closed the stream")


async def test_reconnecting_while_the_daemon_is_gone_and_live_when_back(daemon, eventually) -> None:
    """A vanished daemon shows RECONNECTING; its return shows LIVE, on the same feed."""
    async with FeedClient(daemon.url) as feed:
        states = feed.states()
        assert (await anext(states)).state is State.CONNECTING
        assert (await anext(states)).state is State.LIVE
        await daemon.stop()
        change = await anext(states)
        assert change.state is State.RECONNECTING
        assert "retrying in" in change.reason
        await daemon.start()
        new_id = await daemon.tick("74000")
        async with asyncio.timeout(WAIT):
            assert (await anext(states)).state is State.LIVE
        await eventually(lambda: feed.latest(daemon.pair).id == new_id)
    assert (await anext(states)).state is State.CLOSED
    assert await anext(states, None) is None


async def test_simulated_prices_are_live_but_never_tradeable(daemon_factory) -> None:
    """On the simulated source: ticks say simulated, the feed is LIVE, can_trade is False."""
    sim = {"sources": {PAIR: ["simulated"]}}
    daemon = await daemon_factory(feed=sim, aggregation={"quorum": 1})
    await daemon.tick()
    changes: list[StateChange] = []
    async with FeedClient(daemon.url, on_state=changes.append) as feed:
        async with asyncio.timeout(WAIT):
            tick = await anext(aiter(feed))
        await wait_for(feed, State.LIVE)
        assert tick.simulated is True
        assert feed.status(PAIR).simulated is True
        assert (feed.state, feed.can_trade, feed.reason) == (State.LIVE, False, SIMULATED_REASON)
        await daemon.tick()
        async with asyncio.timeout(WAIT):
            assert (await anext(aiter(feed))).simulated is True
        assert feed.can_trade is False
    assert changes[0] == StateChange(State.LIVE, "Simulated prices: not for trading")


async def test_real_prices_are_tradeable_while_live(daemon) -> None:
    """Real exchanges: not simulated, and can_trade follows LIVE."""
    async with FeedClient(daemon.url) as feed:
        assert feed.can_trade is False, "not before the feed is live"
        async with asyncio.timeout(WAIT):
            tick = await anext(aiter(feed))
        await wait_for(feed, State.LIVE)
        assert tick.simulated is False
        assert (feed.can_trade, feed.reason) == (True, "")


async def test_suspect_price_jump_is_not_tradable(daemon_factory) -> None:
    """A held jump (status ``suspect``) is STALE with the daemon's reason, then LIVE again."""
    daemon = await daemon_factory()
    await daemon.tick("73400.2")
    changes: list[StateChange] = []
    async with FeedClient(daemon.url, on_state=changes.append) as feed:
        await wait_for(feed, State.LIVE)
        await daemon.tick("734002")
        await wait_for(feed, State.STALE)
        status = feed.status(daemon.pair)
        assert status is not None
        assert status.state == "suspect"
        assert feed.can_trade is False
        await daemon.tick("73401")
        await wait_for(feed, State.LIVE)
    assert [c.state for c in changes] == [State.LIVE, State.STALE, State.LIVE, State.CLOSED]
    assert "waiting for 2 more cycles to confirm" in changes[1].reason
