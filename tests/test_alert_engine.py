"""The alert engine and its tables: one transaction per firing, replay after a crash."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from bittrade_feed.alerts import engine as engine_module
from bittrade_feed.alerts.engine import AlertEngine
from bittrade_feed.alerts.rules import Frequency, Kind, Rule, RuleState, evaluate
from bittrade_feed.alerts.store import (
    AlertStore,
    Commit,
    QuotaExceeded,
    StoredFiring,
    StoredRule,
    VersionMismatch,
)
from bittrade_feed.errors import StoreError
from bittrade_feed.feed.ticklog import TickLog
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.ops.metrics import AlertMetrics, Metrics, new_registry
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock

PAIR = "BTC-USD"
UP = Rule(PAIR, Kind.CROSSES_UP, level=Decimal(100), frequency=Frequency(repeat=True))


class Rig:
    """A store, a tick log and an engine listening to it, on a fake clock."""

    def __init__(self, path: Path, store: Store, clock: FakeClock) -> None:
        self.path = path
        self.store = store
        self.clock = clock
        self.alerts = AlertStore(store)
        self.fired: list[tuple[str, int]] = []
        self.engine = AlertEngine(
            self.alerts,
            store,
            clock,
            checkpoint_seconds=10.0,
            metrics=AlertMetrics(new_registry()),
            on_fired=lambda owner, f: self.fired.append((owner, f.id)),
        )
        self.ticklog: TickLog | None = None

    async def start(self) -> None:
        head = await self.store.max_id()
        self.ticklog = TickLog(self.store, Metrics(new_registry()), self.clock, head)
        await self.engine.load(head)
        self.ticklog.add_listener(self.engine.on_tick, name="alerts")

    async def tick(self, price: str | int, pair: str = PAIR) -> Tick:
        assert self.ticklog is not None
        ts = round(self.clock.time() * 1000)
        tick = await self.ticklog.append(TickDraft(pair, Decimal(str(price)), ts, ("kraken",)))
        self.clock.jump(1.0)
        return tick

    async def drain(self) -> None:
        while await self.engine.step():
            pass


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    path = tmp_path / "alerts.sqlite3"
    store = await Store.open(path)
    try:
        made = Rig(path, store, FakeClock())
        await made.start()
        yield made
    finally:
        await store.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return list(con.execute(sql))
    finally:
        con.close()


async def test_a_crossing_records_firing_state_and_outbox(rig: Rig) -> None:
    stored = await rig.engine.create("local", UP, max_rules=10)
    for price in (99, 101, 102):
        await rig.tick(price)
    await rig.drain()
    (firing,) = await rig.alerts.firings("local", stored.id, 10)
    assert firing.tick_id == 2
    assert firing.payload["detail"] == "BTC-USD 101 crossed above 100"
    assert rig.fired == [("local", firing.id)]
    # No endpoint named: nothing in the outbox; streams resume from the firing row itself.
    assert rows(rig.path, "SELECT id FROM alert_outbox") == []
    assert await rig.alerts.firings_after("local", 0, 10) == [firing]
    assert await rig.alerts.firings_after("local", firing.id, 10) == []
    assert await rig.alerts.firings_after("bob", 0, 10) == []
    (saved,) = await rig.alerts.all()
    assert saved.state.last_tick_id == 2  # saved with the firing; tick 3 awaits a checkpoint
    assert saved.state.fired == 1


async def test_checkpoint_saves_states_that_fired_nothing(rig: Rig) -> None:
    await rig.engine.create("local", UP, max_rules=10)
    await rig.tick(99)
    await rig.drain()
    (saved,) = await rig.alerts.all()
    assert saved.state.last_tick_id == 0
    rig.clock.jump(10.0)
    await rig.tick(98)  # changes nothing: the rule is saved as of tick 1, which armed it
    await rig.drain()
    (saved,) = await rig.alerts.all()
    assert saved.state.last_tick_id == 1
    assert saved.state.armed_up


async def test_rules_no_tick_changed_are_saved_once_per_catch_up(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their last_tick_id alone moved: saved only every CATCH_UP_TICKS ids, all at once."""
    monkeypatch.setattr(engine_module, "CATCH_UP_TICKS", 3)
    first = await rig.engine.create("local", UP, max_rules=10)
    await rig.tick(99)  # arms the first rule (id 1)
    second = await rig.engine.create("local", UP, max_rules=10)
    for price in (98, 97, 96):  # tick 2 arms the second; neither changes after that
        await rig.tick(price)
        rig.clock.jump(10.0)  # every step is a checkpoint
        await rig.drain()
    saved = {r.id: r.state.last_tick_id for r in await rig.alerts.all()}
    assert saved == {first.id: 3, second.id: 3}  # caught up at tick 3: 3 ids after 0
    again = Rig(rig.path, rig.store, rig.clock)
    await again.start()  # both start synced at 3: the replay of 4 fires nothing
    await again.tick(101)
    await again.drain()
    for rule in (first, second):
        assert [f.tick_id for f in await again.alerts.firings("local", rule.id, 10)] == [5]


async def test_rules_see_only_ticks_after_their_creation(rig: Rig) -> None:
    await rig.tick(99)
    stored = await rig.engine.create("local", UP, max_rules=10)
    await rig.tick(101)  # no price at or below 100 since creation: not armed
    await rig.tick(99)
    await rig.tick(101)
    await rig.drain()
    assert [f.tick_id for f in await rig.alerts.firings("local", stored.id, 10)] == [4]


async def test_ticks_committed_while_down_are_evaluated_at_start(rig: Rig) -> None:
    stored = await rig.engine.create("local", UP, max_rules=10)
    await rig.drain()
    # The engine stops listening (a crash before it evaluated): the ticks are committed.
    assert rig.ticklog is not None
    rig.ticklog._listeners.clear()
    for price in (99, 101, 99, 101):
        await rig.tick(price)
    again = Rig(rig.path, rig.store, rig.clock)
    await again.start()
    await again.drain()
    assert [f.tick_id for f in await again.alerts.firings("local", stored.id, 10)] == [4, 2]
    # and a third start replays from the saved state: nothing is recorded twice
    third = Rig(rig.path, rig.store, rig.clock)
    await third.start()
    await third.drain()
    assert len(await third.alerts.firings("local", stored.id, 10)) == 2
    assert third.fired == []


async def test_an_unsaved_state_is_remade_by_the_replay(rig: Rig) -> None:
    """A restart after ticks that were evaluated but never checkpointed fires the same."""
    stored = await rig.engine.create("local", UP, max_rules=10)
    for price in (99, 101, 99):  # fired on 2; 3 re-armed it, unsaved
        await rig.tick(price)
    await rig.drain()
    again = Rig(rig.path, rig.store, rig.clock)
    await again.start()
    await again.tick(101)
    await again.drain()
    assert [f.tick_id for f in await again.alerts.firings("local", stored.id, 10)] == [4, 2]


async def test_a_failed_commit_saves_nothing_and_is_retried(rig: Rig) -> None:
    stored = await rig.engine.create("local", UP, max_rules=10)
    con = sqlite3.connect(rig.path, isolation_level=None)
    con.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON alert_firings "
        "BEGIN SELECT RAISE(ABORT, 'firing refused'); END"
    )
    await rig.tick(99)
    await rig.tick(101)
    step = asyncio.create_task(rig.engine.step())
    await asyncio.sleep(0.2)
    assert not step.done()  # retrying
    # the state update went through before the firing's insert failed: rolled back too
    assert rows(rig.path, "SELECT COUNT(*) FROM alert_firings") == [(0,)]
    assert rows(rig.path, "SELECT last_tick_id FROM alert_rules") == [(0,)]
    con.execute("DROP TRIGGER refuse")
    con.close()
    await rig.clock.advance(1.0)
    await asyncio.wait_for(step, 5)
    assert len(await rig.alerts.firings("local", stored.id, 10)) == 1
    assert rows(rig.path, "SELECT COUNT(*) FROM alert_outbox") == [(0,)]  # no endpoint named


async def test_quota_holds_under_concurrent_creates(rig: Rig) -> None:
    results = await asyncio.gather(
        *(rig.engine.create("alice", UP, max_rules=3) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, QuotaExceeded)) == 7
    assert len(await rig.alerts.owned("alice")) == 3
    assert len(await rig.alerts.owned("bob")) == 0


async def test_replace_and_delete_check_owner_and_version(rig: Rig) -> None:
    stored = await rig.engine.create("alice", UP, max_rules=10)
    with pytest.raises(VersionMismatch):
        await rig.engine.replace("alice", stored.id, UP, version=stored.version + 1)
    with pytest.raises(VersionMismatch):
        await rig.engine.replace("bob", stored.id, UP, version=None)
    new = await rig.engine.replace("alice", stored.id, UP, version=stored.version)
    assert new.version == stored.version + 1
    assert new.etag != stored.etag
    await rig.tick(99)
    await rig.tick(101)
    await rig.drain()
    assert len(await rig.alerts.firings("alice", stored.id, 10)) == 1
    assert await rig.alerts.firings("bob", stored.id, 10) == []
    with pytest.raises(VersionMismatch):
        await rig.engine.delete("bob", stored.id, version=None)
    await rig.engine.delete("alice", stored.id, version=new.version)
    assert rows(rig.path, "SELECT COUNT(*) FROM alert_firings") == [(0,)]
    assert rows(rig.path, "SELECT COUNT(*) FROM alert_outbox") == [(0,)]
    assert rig.engine.rules() == []


async def test_an_evaluation_of_an_edited_rule_is_not_saved(rig: Rig) -> None:
    stored = await rig.engine.create("local", UP, max_rules=10)
    ticks = [await rig.tick(p) for p in (99, 101)]
    state = RuleState()
    firing = next(f for t in ticks if (f := evaluate(UP, state, t)))
    stale = Commit(stored.id, stored.version, state.to_json(), firing, 0)
    await rig.alerts.replace("local", stored.id, UP, version=None, last_tick_id=0)
    assert await rig.alerts.commit([stale]) == []
    assert await rig.alerts.firings("local", stored.id, 10) == []
    (saved,) = await rig.alerts.all()
    assert saved.state.to_json() == RuleState().to_json()
    # the same change under the current version is saved, once
    fresh = Commit(stored.id, stored.version + 1, state.to_json(), firing, 0)
    assert len(await rig.alerts.commit([fresh])) == 1
    assert await rig.alerts.commit([fresh]) == []


@pytest.mark.parametrize("seed", range(12))
async def test_concurrent_creates_and_ticks_fire_as_the_oracle(rig: Rig, seed: int) -> None:
    """Rules created while ticks flow see every tick after their creation, exactly once."""
    rng = random.Random(seed)
    prices = [rng.randint(95, 105) for _ in range(40)]
    runner = asyncio.create_task(rig.engine.run())
    created: list[tuple[int, int]] = []  # (rule id, first tick id it may see - 1)

    async def make() -> None:
        for _ in range(5):
            await asyncio.sleep(rng.random() * 0.002)
            stored = await rig.engine.create("local", UP, max_rules=100)
            created.append((stored.id, stored.state.last_tick_id))

    async def feed() -> list[Tick]:
        made = []
        for price in prices:
            made.append(await rig.tick(price))
            await asyncio.sleep(rng.random() * 0.001)
        return made

    try:
        _, ticks = await asyncio.gather(make(), feed())
        for _ in range(200):
            if rig.engine.cursor >= ticks[-1].id:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    for rule_id, start in created:
        state = RuleState(last_tick_id=start)
        expected = [f.tick_id for t in ticks if (f := evaluate(UP, state, t)) is not None]
        got = [f.tick_id for f in await rig.alerts.firings("local", rule_id, 100)]
        assert sorted(got) == expected, (seed, rule_id, start)


class Gated(AlertStore):
    """Holds ``create`` (after its insert) and ``commit`` (before it) until released."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.create_gate = asyncio.Event()
        self.commit_gate = asyncio.Event()
        self.committing = asyncio.Event()

    async def create(self, *args: object, **kwargs: object) -> StoredRule:
        made = await super().create(*args, **kwargs)  # type: ignore[arg-type]
        await self.create_gate.wait()
        return made

    async def commit(self, changes: Sequence[Commit]) -> list[StoredFiring]:
        self.committing.set()
        await self.commit_gate.wait()
        return await super().commit(changes)


async def test_a_rule_created_during_a_commit_still_sees_the_ticks_after_it(rig: Rig) -> None:
    """A step whose commit awaits while a create lands must not move the cursor past it."""
    gated = Gated(rig.store)
    engine = AlertEngine(gated, rig.store, rig.clock, checkpoint_seconds=10.0)
    assert rig.ticklog is not None
    await engine.load(rig.ticklog.last_id)
    rig.ticklog.add_listener(engine.on_tick, name="gated")
    gated.create_gate.set()
    gated.commit_gate.set()
    first = await engine.create("local", UP, max_rules=10)
    await rig.tick(99)
    while await engine.step():
        pass
    gated.create_gate.clear()
    gated.commit_gate.clear()
    gated.committing.clear()
    above = Rule(PAIR, Kind.ABOVE, level=Decimal(100))
    creating = asyncio.create_task(engine.create("local", above, max_rules=10))
    while not engine.rules() or len(await gated.all()) < 2:
        await asyncio.sleep(0.001)  # the insert has landed; create waits at its gate
    await rig.tick(101)  # the first rule crosses: its commit waits at its gate
    stepping = asyncio.create_task(engine.step())
    await gated.committing.wait()
    gated.create_gate.set()
    second = await creating  # lands while the step awaits its commit
    gated.commit_gate.set()
    await stepping
    while await engine.step():
        pass
    assert [f.tick_id for f in await gated.firings("local", first.id, 10)] == [2]
    assert [f.tick_id for f in await gated.firings("local", second.id, 10)] == [2]


async def test_a_move_window_is_refilled_from_stored_ticks_at_start(rig: Rig) -> None:
    move = Rule(PAIR, Kind.PCT_MOVE, pct=Decimal(3), window_s=60)
    stored = await rig.engine.create("local", move, max_rules=10)
    await rig.tick(100)
    rig.clock.jump(10.0)
    await rig.tick(101)
    await rig.drain()
    rig.clock.jump(10.0)  # due: the checkpoint saves last_tick_id = 3
    await rig.tick(101)
    await rig.drain()
    again = Rig(rig.path, rig.store, rig.clock)
    await again.start()  # its window holds 100 and 101 again, from the store
    await again.tick(103)
    await again.drain()
    (firing,) = await again.alerts.firings("local", stored.id, 10)
    assert firing.tick_id == 4
    assert firing.payload["reference"] == "100"


async def test_a_failed_replay_read_is_retried(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = await rig.engine.create("local", UP, max_rules=10)
    await rig.tick(99)
    await rig.tick(101)
    real = rig.store.since_id
    calls: list[int] = []

    async def flaky(after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        calls.append(after)
        if len(calls) == 1:
            raise StoreError("database read failed: disk I/O error")
        return await real(after, pairs, limit)

    monkeypatch.setattr(rig.store, "since_id", flaky)
    rig.engine._rewind(0)  # as a new rule would: read the store from the start
    step = asyncio.create_task(rig.engine.step())
    await asyncio.sleep(0.01)
    await rig.clock.advance(1.0)
    assert await step == 0
    await rig.drain()
    assert calls == [0, 0]
    assert len(await rig.alerts.firings("local", stored.id, 10)) == 1
