"""The hub's promises, driven directly: order, gaps, coalescing, resume hand-over, admission.

Subscribers are real loopback sockets and the store is a real SQLite file; the in-test
``Replay`` wrappers only add a retention floor or a delay around the real store.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from bittrade_feed.broadcast.hub import Full, Hub, Slot
from bittrade_feed.broadcast.replay import Replay
from bittrade_feed.broadcast.wire import WireFormat
from bittrade_feed.config import StreamConfig
from bittrade_feed.models import FeedStatus, Tick, TickDraft
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock, settle
from tests.streamcheck import check_stream, stored_ticks
from tests.streamutil import Peer, loopback_peers

PAIRS = ("BTC-USD", "ETH-USD", "SOL-USD")
RAW = WireFormat.SSE_RAW


class Retained:
    """The real store behind a retention floor the test moves (say, mid-query)."""

    def __init__(self, store: Store, history_floor: int = 0) -> None:
        self.store = store
        self.history_floor = history_floor

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        return await self.store.since_id(after, pairs, limit)


class Slowed(Retained):
    """The real store; each resume query waits for the publisher to reach seeded points.

    Before the query runs and again before it returns, it waits until ``progress()`` (ids
    published so far) reaches a random mark up to ``until``: so ticks are committed and
    published, and the ring rolls over, while the query is pending.
    """

    def __init__(self, store: Store, rnd: random.Random, progress: Callable[[], int]) -> None:
        super().__init__(store)
        self.rnd = rnd
        self.progress = progress
        self.until = 0
        self.pending = 0

    async def _reach(self, mark: int) -> None:
        while self.progress() < min(mark, self.until):
            await asyncio.sleep(0)

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        self.pending += 1
        try:
            start = self.progress()
            before = start + self.rnd.randint(0, self.until - start)
            await self._reach(before)
            rows = await self.store.since_id(after, pairs, limit)
            await self._reach(before + self.rnd.randint(0, self.until - before))
            return rows
        finally:
            self.pending -= 1


def make_hub(replay: Replay, **stream: object) -> Hub:
    config = replace(StreamConfig(), **stream)  # type: ignore[arg-type]
    return Hub(config, FakeClock(), Metrics(new_registry()), replay)


def sample(hub: Hub, name: str, **labels: str) -> float:
    value = hub.metrics.registry.get_sample_value(name, labels)
    assert value is not None, name
    return value


async def commit(store: Store, pair: str, n: int = 1) -> list[Tick]:
    """Insert ``n`` prices of ``pair`` (committed before anyone sees them)."""
    return [
        await store.insert(TickDraft(pair, Decimal(f"{100 + i}.5"), i, ("x",))) for i in range(n)
    ]


async def attach(hub: Hub, peer: Peer, pairs: Sequence[str], last_id: int | None = None) -> Slot:
    slot = hub.admit()
    await hub.subscribe(slot, peer.transport, RAW, tuple(pairs), last_id)
    return slot


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = await Store.open(tmp_path / "feed.sqlite3")
    yield s
    await s.close()


async def test_duplicate_and_older_ids_are_dropped_and_counted(store: Store) -> None:
    """A tick at or below the last id never reaches anyone twice; both stages count it."""
    hub = make_hub(Retained(store))
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, PAIRS[:1])
    ticks = await commit(store, "BTC-USD", 3)
    for tick in [ticks[0], ticks[1], ticks[1], ticks[0], ticks[2]]:
        hub.publish(tick)
    got = await peer.received()
    assert [i for i, e, _ in got if e == "price"] == ["1", "2", "3"]
    assert sample(hub, "bittrade_feed_events_dropped_total", stage="publish") == 2


async def test_subscriber_stage_drops_an_id_it_already_replayed(store: Store) -> None:
    """A replay that saw a commit before its publish: the live copy is dropped for that one."""
    hub = make_hub(Retained(store), replay_limit=3)
    for tick in await commit(store, "BTC-USD") + await commit(store, "ETH-USD", 4):
        hub.publish(tick)  # ids 1..5; the ring keeps 3..5
    (early, late) = await loopback_peers(2)
    await attach(hub, early, ["BTC-USD"])
    (sixth,) = await commit(store, "BTC-USD")  # committed, not yet handed to the hub
    await attach(hub, late, ["BTC-USD"], last_id=1)  # the store path replays 6
    hub.publish(sixth)
    assert [i for i, e, _ in await late.received() if e == "price"] == ["6"]
    assert [i for i, e, _ in await early.received() if e == "price"] == ["1", "6"]
    assert sample(hub, "bittrade_feed_events_dropped_total", stage="subscriber") == 1


async def test_gap_in_ids_becomes_one_resync_to_everyone(store: Store) -> None:
    """Ids the hub never saw (max_id 5 from the store, then 9) give each subscriber a resync."""
    hub = make_hub(Retained(store))
    stored = await commit(store, "BTC-USD", 5)
    hub.load(stored, {"BTC-USD": stored[-1]}, max_id=5)
    peers = await loopback_peers(3)
    for peer, pairs in zip(peers, (["BTC-USD"], ["ETH-USD"], ["BTC-USD", "ETH-USD"]), strict=True):
        await attach(hub, peer, pairs)
    hub.publish(Tick(6, "BTC-USD", Decimal(6), 0, ("x",)))  # max_id + 1: a plain price
    hub.publish(Tick(9, "ETH-USD", Decimal(9), 0, ("x",)))  # 7 and 8 never arrived
    hub.publish(Tick(10, "BTC-USD", Decimal(10), 0, ("x",)))
    btc, eth, both = [await p.received() for p in peers]
    assert [(i, e) for i, e, _ in btc] == [
        ("5", "price"),
        ("6", "price"),
        ("6", "resync"),
        ("10", "price"),
    ]
    assert [(i, e) for i, e, _ in eth if e] == [("9", "resync")]
    assert [(i, e) for i, e, _ in both] == [
        ("5", "price"),
        ("6", "price"),
        ("9", "resync"),
        ("10", "price"),
    ]
    reason = both[2][2]["reason"]
    assert "7-8" in reason and [t["id"] for t in both[2][2]["ticks"]] == [6, 9]
    assert sample(hub, "bittrade_feed_resyncs_total", reason="gap") == 3
    assert sample(hub, "bittrade_feed_tick_gaps_total") == 1
    # The ring no longer claims the missing ids: a resume at 7 goes to the store.
    (resumer,) = await loopback_peers(1)
    await attach(hub, resumer, ["BTC-USD", "ETH-USD"], last_id=7)
    assert [i for i, e, _ in await resumer.received() if e == "price"] == []


def _pair_sets() -> list[tuple[str, ...]]:
    """Every non-empty subset of the pairs, in two orders each (order must not matter)."""
    sets = [c for n in (1, 2, 3) for c in itertools.combinations(PAIRS, n)]
    return sets + [tuple(reversed(c)) for c in sets if len(c) > 1]


@pytest.mark.parametrize("seed", range(30))
async def test_coalesced_windows_reach_every_pair_set_in_id_order(store: Store, seed: int) -> None:
    """Random windows over three pairs: each subscriber gets its pairs' ids once, in order."""
    rnd = random.Random(seed)
    hub = make_hub(Retained(store), coalesce_ms=60_000)  # windows end only by flush()
    sets = _pair_sets()
    peers = await loopback_peers(len(sets) + 3)
    for peer, pairs in zip(peers, sets, strict=False):
        await attach(hub, peer, pairs)
    late = list(zip(peers[len(sets) :], rnd.sample(sets, 3), strict=True))
    waiting = list(late)
    joined: set[Peer] = set()
    for _ in range(60):
        tick = (await commit(store, rnd.choice(PAIRS)))[0]
        hub.publish(tick)
        if rnd.random() < 0.1:
            hub.publish_status(FeedStatus(rnd.choice(PAIRS), "stale", 0, "status in a window"))
        if rnd.random() < 0.2:
            hub.flush()
        if waiting and rnd.random() < 0.05:  # joins mid-window, with a snapshot
            peer, pairs = waiting.pop()
            joined.add(peer)
            await attach(hub, peer, pairs)
    hub.flush()
    stored = await stored_ticks(store.path)
    for peer, pairs in list(zip(peers, sets, strict=False)) + late:
        if peer in (p for p, _ in waiting):
            peer.close()  # never joined
            continue
        got = await peer.received()
        ids = check_stream(got, stored, pairs, resume_from=None if peer in joined else 0)
        if peer not in joined:
            assert ids == [i for i, t in stored.items() if t["pair"] in pairs]


async def test_resume_inside_retention_hole_gets_resync(tmp_path: Path) -> None:
    """Retention deleted ids 3..8, then a restart: the ring must not claim them; resync."""
    path = tmp_path / "feed.sqlite3"
    async with await Store.open(path) as store:
        for n in range(1, 11):  # ids 1..10, BTC and ETH in turn; 3..8 are old
            ts = 1000 if 3 <= n <= 8 else 5000
            await store.insert(TickDraft(PAIRS[n % 2], Decimal(n), ts, ("x",)))
        assert await store.delete_older_than(2000) == 6
    async with await Store.open(path) as store:  # the restart
        assert store.history_floor == 8
        hub = make_hub(store, replay_limit=4)  # the real store is the Replay
        hub.load(await store.recent(4), await store.latest(PAIRS[:2]), await store.max_id())
        inside, edge, old = await loopback_peers(3)
        await attach(hub, inside, PAIRS[:2], last_id=4)
        await attach(hub, edge, PAIRS[:2], last_id=8)
        await attach(hub, old, PAIRS[:2], last_id=1)
        assert [(i, e) for i, e, _ in await inside.received()] == [("10", "resync")]
        assert [(i, e) for i, e, _ in await edge.received()] == [("9", "price"), ("10", "price")]
        assert [(i, e) for i, e, _ in await old.received()] == [("10", "resync")]
        assert sample(hub, "bittrade_feed_resyncs_total", reason="retention") == 2


async def test_retention_floor_rising_during_the_query_resyncs(store: Store) -> None:
    """The floor is read again after the store answered: rows may have gone meanwhile."""
    replay = Retained(store)
    hub = make_hub(replay, replay_limit=3)
    for tick in await commit(store, "BTC-USD", 3) + await commit(store, "ETH-USD", 4):
        hub.publish(tick)  # the ring keeps 5..7
    (peer,) = await loopback_peers(1)
    slot = hub.admit()
    task = asyncio.create_task(hub.subscribe(slot, peer.transport, RAW, ("BTC-USD",), 2))
    await asyncio.sleep(0)  # the query (BTC after 2: id 3) is on its way
    replay.history_floor = 3  # retention ran
    await task
    assert [(i, e) for i, e, _ in await peer.received()] == [("3", "resync")]


@pytest.mark.parametrize("seed", range(40))
async def test_resume_while_ring_rolls_over_has_no_gap_no_duplicate(
    store: Store, seed: int
) -> None:
    """Ticks committed and published while the resume query is pending, ring rolling over."""
    rnd = random.Random(seed)
    replay = Slowed(store, rnd, lambda: hub.max_id)
    hub = make_hub(replay, replay_limit=6)
    for _ in range(14):
        hub.publish((await commit(store, rnd.choice(PAIRS)))[0])
    count = rnd.randint(4, 20)
    replay.until = 14 + count
    resume = rnd.randint(4, 8)  # below the ring's floor: the store answers
    subscriptions = [PAIRS[:1], PAIRS[:2], PAIRS[:1], PAIRS]
    peers = await loopback_peers(len(subscriptions))

    async def publisher() -> None:
        # Mostly other pairs: the ring rolls over while few events are missed.
        for _ in range(count):
            pair = "BTC-USD" if rnd.random() < 0.2 else rnd.choice(PAIRS[1:])
            tick = (await commit(store, pair))[0]
            for _ in range(rnd.randint(0, 2)):
                await asyncio.sleep(0)  # between commit and publish
            hub.publish(tick)

    async def resumer(peer: Peer, pairs: tuple[str, ...]) -> None:
        for _ in range(rnd.randint(0, 3)):
            await asyncio.sleep(0)
        await attach(hub, peer, pairs, resume)

    await asyncio.gather(
        publisher(), *(resumer(p, s) for p, s in zip(peers, subscriptions, strict=True))
    )
    assert replay.pending == 0
    stored = await stored_ticks(store.path)
    for peer, pairs in zip(peers, subscriptions, strict=True):
        got = await peer.received()
        ids = check_stream(got, stored, pairs, resume_from=resume)
        if not any(e == "resync" for _, e, _ in got):
            assert ids == [i for i, t in stored.items() if i > resume and t["pair"] in pairs]


@pytest.mark.parametrize("seed", range(40))
async def test_resume_ahead_waits_for_the_ticks_no_gap_no_duplicate(
    store: Store, seed: int
) -> None:
    """Resume points above ``max_id`` (ids another daemon already sent) wait for the hub.

    Ticks are committed and published while the resumes wait, with coalescing on or off
    and the ring rolling over; every stream continues right after its resume point.
    """
    rnd = random.Random(seed)
    hub = make_hub(
        Retained(store), replay_limit=rnd.choice([4, 8, 50]), coalesce_ms=rnd.choice([0, 5])
    )
    hub.ahead_wait = 2.0  # the fake clock never gets there: every wait must be woken
    for _ in range(10):
        hub.publish((await commit(store, rnd.choice(PAIRS)))[0])
    count = rnd.randint(6, 20)
    subscriptions = [PAIRS[:1], PAIRS[:2], PAIRS, PAIRS[1:2], PAIRS[:1]]
    resumes = [10 + rnd.randint(1, count) for _ in subscriptions]
    peers = await loopback_peers(len(subscriptions))
    live = await loopback_peers(1)

    async def publisher() -> None:
        for _ in range(count):
            for _ in range(rnd.randint(0, 3)):
                await asyncio.sleep(0)
            hub.publish((await commit(store, rnd.choice(PAIRS)))[0])

    async def resumer(peer: Peer, pairs: tuple[str, ...], resume: int) -> None:
        for _ in range(rnd.randint(0, 4)):
            await asyncio.sleep(0)
        await attach(hub, peer, pairs, resume)

    async def newcomer() -> None:
        # Not held up by the waiting resumes: its snapshot and live events flow meanwhile.
        await asyncio.sleep(0)
        await attach(hub, live[0], PAIRS)

    await asyncio.gather(
        publisher(),
        newcomer(),
        *(resumer(p, s, r) for p, s, r in zip(peers, subscriptions, resumes, strict=True)),
    )
    hub.flush()
    assert hub.count == len(subscriptions) + 1
    stored = await stored_ticks(store.path)
    for peer, pairs, resume in zip(peers, subscriptions, resumes, strict=True):
        got = await peer.received()
        ids = check_stream(got, stored, pairs, resume_from=resume)
        resyncs = [d["reason"] for _, e, d in got if e == "resync"]
        assert not [r for r in resyncs if "ahead" in r], resyncs
        if not resyncs:
            assert ids == [i for i, t in stored.items() if i > resume and t["pair"] in pairs]
    check_stream(await live[0].received(), stored, PAIRS)
    assert sample(hub, "bittrade_feed_resume_waits_total", outcome="late") == 0
    assert sample(hub, "bittrade_feed_resume_waits_total", outcome="caught_up") >= 1


async def test_resume_ahead_that_is_never_reached_resyncs_after_the_wait(store: Store) -> None:
    """The wait is bounded: past ``ahead_wait`` the answer is ``resync`` (ahead), once."""
    hub = make_hub(Retained(store))
    hub.ahead_wait = 2.0
    for tick in await commit(store, "BTC-USD", 3):
        hub.publish(tick)
    (peer,) = await loopback_peers(1)
    task = asyncio.create_task(attach(hub, peer, ["BTC-USD"], 9))
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    await settle()  # the wait starts its timer on the fake clock
    await clock.advance(1.9)
    assert not task.done() and hub.count == 1
    await clock.advance(0.2)
    await task
    got = await peer.received()
    assert [e for _, e, _ in got if e] == ["resync"]
    assert "ahead" in got[-1][2]["reason"]
    assert sample(hub, "bittrade_feed_resume_waits_total", outcome="late") == 1
    assert sample(hub, "bittrade_feed_resyncs_total", reason="ahead") == 1


async def test_cancelled_resume_detaches_and_admission_is_one_step(store: Store) -> None:
    """Slots are taken without an await; a resume cancelled mid-query leaves nothing behind."""
    hub = make_hub(Slowed(store, random.Random(1), lambda: 0), replay_limit=2, max_subscribers=2)
    for tick in await commit(store, "BTC-USD", 5):
        hub.publish(tick)
    first, second = hub.admit(), hub.admit()
    with pytest.raises(Full):
        hub.admit()
    (peer,) = await loopback_peers(1)
    task = asyncio.create_task(hub.subscribe(first, peer.transport, RAW, ("BTC-USD",), 1))
    await asyncio.sleep(0)
    assert hub.count == 1  # registered before the query
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    hub.release(first)
    hub.release(first)  # idempotent
    hub.release(second)
    assert (hub.count, hub.admitted) == (0, 0)
    with pytest.raises(ValueError, match="slot"):
        await hub.subscribe(first, peer.transport, RAW, ("BTC-USD",), None)
    await peer.received()


async def test_opening_is_cut_off_past_the_cap(store: Store) -> None:
    """The opening write is checked against the cap like any other (a replay past it: slow)."""
    hub = make_hub(Retained(store), max_buffer_bytes=4096)
    for tick in await commit(store, "BTC-USD", 200):
        hub.publish(tick)
    (peer,) = await loopback_peers(1, rcvbuf=4096)
    peer.stall()
    sub = await hub.subscribe(hub.admit(), peer.transport, RAW, ("BTC-USD",), 1)
    assert sub.done.done() and sub.done.result() == "slow"
    assert peer.transport.is_closing() and hub.count == 0
    assert (
        sample(hub, "bittrade_feed_connections_closed_total", transport="sse", reason="slow") == 1
    )
    peer.close()


async def test_opening_without_events_still_carries_retry(store: Store) -> None:
    """No price, no status yet: the retry line still goes out, in a block of its own."""
    hub = make_hub(Retained(store))
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, ["BTC-USD"])
    peer.transport.close()
    assert await peer.reader.read() == b"retry: 3000\n\n"
    await peer.received()
