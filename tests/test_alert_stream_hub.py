"""Alert events in the hub, driven directly: by owner, in id order, once, and resumable.

Subscribers are real loopback sockets; firings are real rows of a real SQLite file
(``AlertStore.test_fire``), and the alert source is ``AlertStore.firings_after`` itself,
only wrapped to be slowed down at seeded points or to fail.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import AlertStore, StoredFiring
from bittrade_feed.broadcast import alerts as alert_feed
from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.broadcast.wire import WireFormat
from bittrade_feed.config import StreamConfig
from bittrade_feed.errors import StoreError
from bittrade_feed.models import TickDraft
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock, settle
from tests.servedapp import captured_logs
from tests.streamcheck import check_stream, stored_ticks
from tests.streamutil import Peer, loopback_peers

PAIRS = ("BTC-USD", "ETH-USD")
OWNERS = ("alice", "bob")
RAW = WireFormat.SSE_RAW
RULE = {"pair": "BTC-USD", "kind": "above", "level": "1"}


class Fixture:
    """A store with one rule per owner, and the firings recorded so far."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.alerts = AlertStore(store)
        self.rules: dict[str, int] = {}
        self.fired: list[tuple[str, StoredFiring]] = []

    async def setup(self) -> None:
        for owner in OWNERS:
            made = await self.alerts.create(
                owner, parse_rule(RULE), last_tick_id=0, now_ms=1, max_rules=10
            )
            self.rules[owner] = made.id

    async def fire(self, owner: str) -> StoredFiring:
        """Commit one firing of ``owner``'s rule (not yet published)."""
        firing = await self.alerts.test_fire(owner, self.rules[owner], {"test": True}, 1)
        self.fired.append((owner, firing))
        return firing

    def ids(self, owner: str, after: int = 0) -> list[int]:
        return [f.id for o, f in self.fired if o == owner and f.id > after]


class Slowed:
    """``firings_after`` waiting, before the read and before it answers, for the publisher
    to reach seeded marks (so firings are committed and published meanwhile)."""

    def __init__(self, fx: Fixture, rnd: random.Random, progress: Callable[[], int]) -> None:
        self.fx = fx
        self.rnd = rnd
        self.progress = progress
        self.until = 0
        self.calls = 0

    async def _reach(self, mark: int) -> None:
        while self.progress() < min(mark, self.until):
            await asyncio.sleep(0)

    async def __call__(self, owner: str, after: int, limit: int) -> list[StoredFiring]:
        self.calls += 1
        before = self.progress() + self.rnd.randint(0, 4)
        await self._reach(before)
        rows = await self.fx.alerts.firings_after(owner, after, limit)
        await self._reach(before + self.rnd.randint(0, 4))
        return rows


class Failing:
    """``firings_after`` that raises ``StoreError`` on its first ``failures`` calls."""

    def __init__(self, fx: Fixture, failures: int) -> None:
        self.fx = fx
        self.failures = failures
        self.calls = 0

    async def __call__(self, owner: str, after: int, limit: int) -> list[StoredFiring]:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreError("database is locked")
        return await self.fx.alerts.firings_after(owner, after, limit)


def make_hub(store: Store, **stream: object) -> Hub:
    config = replace(StreamConfig(), **stream)  # type: ignore[arg-type]
    return Hub(config, FakeClock(), Metrics(new_registry()), store)


async def attach(
    hub: Hub,
    peer: Peer,
    owner: str | None,
    alerts_after: int | None = None,
    last_id: int | None = None,
    pairs: Sequence[str] = PAIRS,
) -> None:
    await hub.subscribe(
        hub.admit(),
        peer.transport,
        RAW,
        tuple(pairs),
        last_id,
        owner=owner,
        alerts_after=alerts_after,
    )


def alerts_of(got: list[tuple[Any, ...]]) -> list[int]:
    """The firing ids of a subscriber's alert events; each must carry no ``id:`` line."""
    found = []
    for ident, event, data in got:
        if event == "alert":
            assert ident is None, "an alert event must not move Last-Event-ID"
            found.append(int(data["id"]))
    return found


async def publish_seeded(
    hub: Hub,
    fx: Fixture,
    rnd: random.Random,
    count: int,
    published: list[int],
    repeats: float = 0.0,
) -> None:
    """Commit and publish ``count`` firings of random owners, yielding a seeded number of
    times between each commit and its publish; with ``repeats``, that share of publishes
    is followed by a second publisher repeating an older firing."""
    for _ in range(count):
        owner = rnd.choice(OWNERS)
        firing = await fx.fire(owner)
        for _ in range(rnd.randint(0, 3)):
            await asyncio.sleep(0)  # between the commit and the publish
        hub.publish_alert(owner, firing)
        published.append(firing.id)
        if rnd.random() < repeats:
            again_owner, again = rnd.choice(fx.fired)
            hub.publish_alert(again_owner, again)


@pytest.fixture
async def fx(tmp_path: Path) -> Fixture:
    store = await Store.open(tmp_path / "feed.sqlite3")
    made = Fixture(store)
    await made.setup()
    yield made
    await store.close()


async def test_live_alerts_go_to_the_owners_streams_only(fx: Fixture) -> None:
    """Alice's two streams get her firings, in id order; Bob's and a scope-less one none."""
    hub = make_hub(fx.store)
    hub.set_alert_source(fx.alerts.firings_after)
    mine, also_mine, bobs, unscoped = await loopback_peers(4)
    await attach(hub, mine, "alice")
    await attach(hub, also_mine, "alice", pairs=PAIRS[1:])  # whatever pairs it asked for
    await attach(hub, bobs, "bob")
    await attach(hub, unscoped, None, alerts_after=0)
    for _ in range(3):
        hub.publish_alert("alice", await fx.fire("alice"))
    got = await mine.received()
    assert alerts_of(got) == fx.ids("alice")
    (first,) = [d for _, e, d in got if e == "alert"][:1]
    assert first == fx.fired[0][1].to_json()
    assert alerts_of(await also_mine.received()) == fx.ids("alice")
    assert alerts_of(await bobs.received()) == []
    assert alerts_of(await unscoped.received()) == []


async def test_a_firing_already_written_is_not_written_again(fx: Fixture) -> None:
    """Publishing the same or an older firing again (a second publisher) writes nothing."""
    hub = make_hub(fx.store)
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, "alice")
    one, two = await fx.fire("alice"), await fx.fire("alice")
    for firing in (one, two, two, one):
        hub.publish_alert("alice", firing)
    assert alerts_of(await peer.received()) == [one.id, two.id]
    dropped = hub.metrics.registry.get_sample_value(
        "bittrade_feed_events_dropped_total", {"stage": "subscriber"}
    )
    assert dropped == 2


async def test_a_firing_follows_the_price_still_in_the_coalescing_window(fx: Fixture) -> None:
    """With coalescing on, the window is flushed first: the price, then its alert."""
    hub = make_hub(fx.store, coalesce_ms=60_000)  # the window ends only by flush()
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, "alice")
    tick = await fx.store.insert(TickDraft("BTC-USD", Decimal(5), 0, ("x",)))
    hub.publish(tick)
    hub.publish_alert("alice", await fx.fire("alice"))
    got = [(i, e) for i, e, _ in await peer.received() if e]
    assert got == [(str(tick.id), "price"), (None, "alert")]


async def test_resume_reads_every_page_in_order(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``alerts_after`` replays exactly the owner's firings above it, over many pages."""
    monkeypatch.setattr(alert_feed, "PAGE", 3)
    for _ in range(11):
        await fx.fire(random.choice(OWNERS))
    hub = make_hub(fx.store)
    hub.set_alert_source(fx.alerts.firings_after)
    after = fx.ids("alice")[1]
    peers = await loopback_peers(2)
    await attach(hub, peers[0], "alice", alerts_after=after)
    await attach(hub, peers[1], "bob", alerts_after=0)
    assert alerts_of(await peers[0].received()) == fx.ids("alice", after)
    assert alerts_of(await peers[1].received()) == fx.ids("bob")


@pytest.mark.parametrize("seed", range(40))
async def test_resume_hand_over_has_no_gap_and_no_duplicate(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Firings committed and published (some twice) while resumes read pages slowly.

    Each resuming stream gets exactly its owner's firings above its ``alerts_after``, in
    order; a live-only stream gets every firing published after it registered; the price
    openings (some from the store, which holds the alerts longer) are unchanged.
    """
    rnd = random.Random(seed)
    monkeypatch.setattr(alert_feed, "PAGE", rnd.choice([1, 2, 3, 1000]))
    hub = make_hub(fx.store, replay_limit=3)
    for _ in range(8):
        hub.publish(await fx.store.insert(TickDraft(rnd.choice(PAIRS), Decimal(1), 0, ("x",))))
    for _ in range(rnd.randint(0, 8)):
        owner = rnd.choice(OWNERS)
        hub.publish_alert(owner, await fx.fire(owner))
    published: list[int] = []
    source = Slowed(fx, rnd, lambda: len(published))
    hub.set_alert_source(source)
    count = rnd.randint(3, 15)
    source.until = count
    known = [f.id for _, f in fx.fired]
    resumes = [
        (owner, rnd.choice([0, *known]), rnd.choice([None, 2, 7]))
        for owner in (*OWNERS, rnd.choice(OWNERS))
    ]
    peers = await loopback_peers(len(resumes) + 1)
    live_from: list[int] = []

    def publisher() -> Awaitable[None]:
        return publish_seeded(hub, fx, rnd, count, published, repeats=0.2)

    async def resumer(peer: Peer, owner: str, after: int, last_id: int | None) -> None:
        for _ in range(rnd.randint(0, 4)):
            await asyncio.sleep(0)
        await attach(hub, peer, owner, alerts_after=after, last_id=last_id)

    async def live() -> None:
        for _ in range(rnd.randint(0, 6)):
            await asyncio.sleep(0)
        live_from.append(len(published))  # no await from here to its registration
        await attach(hub, peers[-1], "alice")

    await asyncio.gather(
        publisher(),
        live(),
        *(resumer(p, *r) for p, r in zip(peers, resumes, strict=False)),
    )
    assert source.calls >= len(resumes)
    stored = await stored_ticks(fx.store.path)
    for peer, (owner, after, last_id) in zip(peers, resumes, strict=False):
        got = await peer.received()
        assert alerts_of(got) == fx.ids(owner, after), (owner, after)
        check_stream(got, stored, PAIRS, resume_from=last_id)
    got = alerts_of(await peers[-1].received())
    assert got == sorted(set(got)) and set(got) <= set(fx.ids("alice"))
    owners = {f.id: o for o, f in fx.fired}
    assert {i for i in published[live_from[0] :] if owners[i] == "alice"} <= set(got)


async def test_a_failing_source_is_retried_and_the_resume_completes(fx: Fixture) -> None:
    """Two failed reads, then an answer: the backoff waits and nothing is missed."""
    for _ in range(3):
        await fx.fire("alice")
    hub = make_hub(fx.store)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    source = Failing(fx, failures=2)
    hub.set_alert_source(source)
    (peer,) = await loopback_peers(1)
    task = asyncio.create_task(attach(hub, peer, "alice", alerts_after=0))
    await settle()
    assert not task.done() and source.calls == 1
    live = await fx.fire("alice")
    hub.publish_alert("alice", live)  # held while the resume waits
    await clock.advance(sum(alert_feed.RETRY_DELAYS[:2]))
    await task
    assert source.calls == 3
    assert alerts_of(await peer.received()) == fx.ids("alice")


async def test_a_source_that_keeps_failing_gives_up_and_closes_the_stream(
    fx: Fixture,
) -> None:
    """Past the last retry: an error in the log and the stream closed (``unavailable``),
    before any live alert could move its client's point past the unread ones; the
    client's reconnect with the same ``alerts_after`` then gets them all."""
    missed = await fx.fire("alice")
    hub = make_hub(fx.store)
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    hub.set_alert_source(Failing(fx, failures=100))
    first, second = await loopback_peers(2)
    with captured_logs() as records:
        task = asyncio.create_task(attach(hub, first, "alice", alerts_after=0))
        await settle()
        held = await fx.fire("alice")
        hub.publish_alert("alice", held)
        await clock.advance(sum(alert_feed.RETRY_DELAYS) + 1)
        await task
    assert hub.count == 0
    got = await first.received()
    assert alerts_of(got) == [] and position_of(got) is None
    gave_up = [r for r in records if "gave up" in r.getMessage()]
    assert gave_up and gave_up[0].levelno == logging.ERROR
    hub.set_alert_source(fx.alerts.firings_after)
    await attach(hub, second, "alice", alerts_after=0)
    assert alerts_of(await second.received()) == [missed.id, held.id]


async def test_closing_a_stream_ends_its_retry_wait(fx: Fixture) -> None:
    """Shutdown during the backoff: the resume stops at once, not after the delay."""
    hub = make_hub(fx.store)
    source = Failing(fx, failures=100)
    hub.set_alert_source(source)
    (peer,) = await loopback_peers(1)
    task = asyncio.create_task(attach(hub, peer, "alice", alerts_after=0))
    await settle()
    assert source.calls == 1
    hub.close_all("shutdown")
    async with asyncio.timeout(1):  # the fake clock never moves: only the close can wake it
        await task
    assert source.calls == 1 and hub.count == 0
    peer.close()


async def test_no_source_means_live_alerts_only(fx: Fixture) -> None:
    """Without a source (alerts shutting down) a resume skips the stored firings."""
    await fx.fire("alice")
    hub = make_hub(fx.store)
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, "alice", alerts_after=0)
    later = await fx.fire("alice")
    hub.publish_alert("alice", later)
    assert alerts_of(await peer.received()) == [later.id]


async def test_cancelled_resume_detaches_and_leaves_no_index_entry(fx: Fixture) -> None:
    """A stream that goes while its alert resume reads is forgotten, its owner index too."""
    hub = make_hub(fx.store)
    gate = asyncio.Event()

    async def stuck(owner: str, after: int, limit: int) -> list[StoredFiring]:
        await gate.wait()
        return []

    hub.set_alert_source(stuck)
    (peer,) = await loopback_peers(1)
    task = asyncio.create_task(attach(hub, peer, "alice", alerts_after=0))
    await settle()
    assert hub.count == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.count == 0
    hub.publish_alert("alice", await fx.fire("alice"))  # nobody to write to: no error
    peer.close()


async def test_a_slow_stream_is_cut_off_by_alerts_too(fx: Fixture) -> None:
    """Alert writes are checked against max_buffer_bytes like price writes."""
    hub = make_hub(fx.store, max_buffer_bytes=4096)
    stalled, fine = await loopback_peers(2, rcvbuf=4096)
    stalled.stall()
    await attach(hub, stalled, "alice")
    await attach(hub, fine, "alice")
    for _ in range(300):
        hub.publish_alert("alice", await fx.fire("alice"))
        if hub.count == 1:
            break
    assert hub.count == 1 and stalled.transport.is_closing()
    assert alerts_of(await fine.received()) == fx.ids("alice")
    stalled.close()


async def test_publish_alert_never_raises(fx: Fixture) -> None:
    """A firing that cannot be encoded is logged, and the caller goes on."""

    class Broken:
        id = 1

        def to_json(self) -> dict[str, Any]:
            raise ValueError("cannot encode")

    hub = make_hub(fx.store)
    (peer,) = await loopback_peers(1)
    await attach(hub, peer, "alice")
    with captured_logs() as records:
        hub.publish_alert("alice", Broken())
    assert any("not written" in r.getMessage() for r in records)
    peer.close()


def position_of(got: list[tuple[Any, ...]]) -> int | None:
    """The ``after`` of a subscriber's ``alerts`` event (its resume point), if it got one."""
    found = [int(data["after"]) for _, event, data in got if event == "alerts"]
    assert len(found) <= 1 and all(ident is None for ident, e, _ in got if e == "alerts")
    return found[0] if found else None


@pytest.mark.parametrize("seed", range(40))
async def test_the_opening_position_loses_nothing_before_the_first_alert(
    fx: Fixture, seed: int
) -> None:
    """A first connection (no ``alerts_after``) opens amid commits and publishes, and is
    closed at a seeded point, maybe before any alert reached it; the client reconnects
    with the highest of its ``alerts`` position and the ids it saw. Between them the two
    connections carry every firing of its owner published after the first registered."""
    rnd = random.Random(seed)
    for _ in range(rnd.randint(0, 4)):  # committed before the daemon started
        await fx.fire(rnd.choice(OWNERS))
    hub = make_hub(fx.store)
    hub.set_alert_source(
        fx.alerts.firings_after, latest=max((f.id for _, f in fx.fired), default=0)
    )
    published: list[int] = []
    registered: list[int] = []
    count = rnd.randint(2, 12)
    first, second = await loopback_peers(2)

    def publisher() -> Awaitable[None]:
        return publish_seeded(hub, fx, rnd, count, published)

    async def client() -> None:
        for _ in range(rnd.randint(0, 5)):
            await asyncio.sleep(0)
        registered.append(len(published))  # no await from here to its registration
        sub = await hub.subscribe(hub.admit(), first.transport, RAW, PAIRS, None, owner="alice")
        for _ in range(rnd.randint(0, 6)):
            await asyncio.sleep(0)
        hub.detach(sub, "client")

    await asyncio.gather(publisher(), client())
    got = await first.received()
    seen = alerts_of(got)
    position = position_of(got)
    assert position is not None  # latest known, the source did not fail: always said
    resume = max([position, *seen])
    await attach(hub, second, "alice", alerts_after=resume)
    again = alerts_of(await second.received())
    owners = {f.id: o for o, f in fx.fired}
    wanted = {i for i in published[registered[0] :] if owners[i] == "alice"}
    assert wanted <= set(seen) | set(again)
    assert seen == sorted(set(seen)) and again == sorted(set(again))
    assert not set(seen) & set(again)  # the resume point is exact: nothing twice


async def test_no_position_until_the_latest_firing_id_is_known(fx: Fixture) -> None:
    """A hub that has not read the store's latest id (a cluster node before Redis answers)
    tells no resume point: "0" would make the client's reconnect replay all history. Once
    known, the next opening is told the highest of it and what was published since."""
    await fx.fire("alice")
    hub = make_hub(fx.store)
    hub.set_alert_source(fx.alerts.firings_after)
    first, second = await loopback_peers(2)
    await attach(hub, first, "alice")
    assert position_of(await first.received()) is None
    bob = await fx.fire("bob")
    hub.publish_alert("bob", bob)
    hub.alerts_known(1)
    await attach(hub, second, "alice")
    assert position_of(await second.received()) == bob.id
