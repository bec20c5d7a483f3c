"""The rule index gives exactly what running every rule on every tick gives.

The reference below is the engine's evaluation before the index: ``evaluate`` on every
rule of the tick's pair, in the order the rules were added. Hypothesis drives both
through the same random rule sets (every kind, random levels, bands, frequencies, expiry
and saved states, as rules loaded at start have) and the same random operations: ticks
of two pairs (times that may stand still or step back), rules added in step with the
ticks, behind them (then the stored ticks since are replayed, as the engine's rewind
does) or ahead of them, replaced, deleted, replays of ticks already seen, checkpoints,
and restarts.

Checkpoints differ on purpose: the index saves a rule no tick visited only now and then
(``PairIndex.catch_up``), where the plain loop saved every rule at every checkpoint. What
must hold is what the saves are for: a restart from what the store then holds (each
rule's last saved state, ``last_tick_id`` the highest saved) replays the stored ticks to
the same states, making no firing that was not made before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.alerts import engine as engine_module
from bittrade_feed.alerts.engine import AlertEngine
from bittrade_feed.alerts.index import Entry, PairIndex
from bittrade_feed.alerts.rules import (
    DIRECTIONS,
    Frequency,
    Kind,
    Rule,
    RuleState,
    evaluate,
)
from bittrade_feed.alerts.store import Commit, StoredRule
from bittrade_feed.models import Tick
from tests.fakeclock import FakeClock

PAIRS = ("BTC-USD", "ETH-USD")
T0 = 1_763_900_000_000
D = Decimal

prices = st.integers(180, 220).map(lambda n: D(n) / 2)
"""90 to 110 in steps of 0.5: often exactly at a level or a band edge."""
steps = st.sampled_from([1000, 1000, 1000, 500, 0, 2000, -500])
"""Milliseconds from one tick's time to the next: mostly on, sometimes still or back."""

frequencies = st.one_of(
    st.just(Frequency()),
    st.builds(
        Frequency,
        repeat=st.just(True),
        cooldown_s=st.integers(0, 3),
        max_count=st.none() | st.integers(1, 4),
    ),
)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(list(Kind)))
    common: dict[str, Any] = {
        "frequency": draw(frequencies),
        "expires_ms": draw(st.none() | st.integers(0, 40).map(lambda n: T0 + n * 500)),
    }
    pair = draw(st.sampled_from(PAIRS))
    if kind is Kind.PCT_MOVE:
        return Rule(
            pair,
            kind,
            pct=D(draw(st.integers(1, 10))),
            window_s=draw(st.integers(60, 600)),
            direction=draw(st.sampled_from(DIRECTIONS)),
            **common,
        )
    level = D(draw(st.integers(93, 107)))
    band = D(draw(st.integers(0, 6))) / 2
    return Rule(pair, kind, level=level, hysteresis=band, **common)


@st.composite
def saved_states(draw: st.DrawFn) -> RuleState:
    """A fresh state, or one as a rule loaded at start may have saved."""
    if draw(st.booleans()):
        return RuleState()
    fired = draw(st.integers(0, 3))
    return RuleState(
        fired=fired,
        last_fired_ms=None if fired == 0 else draw(st.integers(T0 - 5000, T0 + 5000)),
        armed_up=draw(st.booleans()),
        armed_down=draw(st.booleans()),
        done=draw(st.integers(0, 9)) == 0,
    )


ticks = st.tuples(
    st.just("ticks"),
    st.lists(st.tuples(st.sampled_from(PAIRS[:1] * 3 + PAIRS[1:]), prices, steps), max_size=12),
)
ops = st.lists(
    st.one_of(
        *[ticks] * 4,
        st.tuples(
            st.just("add"), rules(), saved_states(), st.sampled_from(["now", "behind", "ahead"])
        ),
        st.tuples(st.just("replace"), st.integers(0, 50), rules()),
        st.tuples(st.just("drop"), st.integers(0, 50)),
        st.tuples(st.just("replay"), st.integers(1, 10)),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("restart")),
    ),
    max_size=40,
)
starts = st.lists(st.tuples(rules(), saved_states()), min_size=1, max_size=30)
"""The rules loaded before the first tick."""


@dataclass
class Reference:
    """The plain loop: every rule of the pair, in the order added."""

    rules: dict[int, tuple[Rule, RuleState]] = field(default_factory=dict)

    def evaluate(self, tick: Tick) -> list[tuple[int, Any, dict[str, Any]]]:
        out = []
        for ident, (rule, state) in self.rules.items():
            if rule.pair != tick.pair:
                continue
            before = state.last_tick_id
            firing = evaluate(rule, state, tick)
            if state.last_tick_id == before:
                continue
            if firing is not None:
                out.append((ident, firing, state.to_json()))
        return out


@dataclass
class Saved:
    """What the store holds of each rule: its version and its last saved state."""

    rows: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def commit(self, changes: list[Commit]) -> None:
        for change in changes:  # as AlertStore.commit: skipped for another version
            version, state = self.rows.get(change.rule_id, (None, {}))
            if version == change.version:
                seen = max(state["last_tick_id"], change.state["last_tick_id"])
                self.rows[change.rule_id] = (version, {**change.state, "last_tick_id": seen})


class Loader:
    """The ``AlertStore.all`` an engine loads from at start."""

    def __init__(self, rules: list[StoredRule]) -> None:
        self.rules = rules

    async def all(self) -> list[StoredRule]:
        return self.rules


def engine(alerts: object = None) -> AlertEngine:
    # Only the synchronous core is driven here (and load): the tick store is never read.
    return AlertEngine(alerts, None, FakeClock(), checkpoint_seconds=10.0)  # type: ignore[arg-type]


def restarted(
    saved: Saved, definitions: dict[int, Rule], history: list[Tick]
) -> tuple[AlertEngine, set[tuple[int, int]]]:
    """A new engine loaded from ``saved``, after its replay; and the firings it made.

    ``pct_move`` rules are left out: the index visits them on every tick, so they are
    saved as before, and their windows are refilled from the clock's last minutes,
    which these made-up tick times do not follow.
    """
    rules = [
        StoredRule(ident, "local", rule, RuleState.from_json(saved.rows[ident][1]), 1, 0)
        for ident, rule in sorted(definitions.items())
        if rule.kind is not Kind.PCT_MOVE
    ]
    again = engine(Loader(rules))
    head = history[-1].id if history else 0
    asyncio.run(again.load(head))
    replay = [t for t in history if t.id > again.cursor]
    made = {(c.rule_id, c.firing.tick_id) for c in again._evaluate(replay) if c.firing}
    return again, made


def copy(state: RuleState) -> RuleState:
    return replace(state, window=None)


@settings(max_examples=1000, deadline=None)
@given(starts, ops, st.sampled_from([0, 4, 10_000]))
def test_the_index_fires_and_saves_as_the_plain_loop(
    loaded: list[tuple[Rule, RuleState]], script: list[tuple[Any, ...]], catch_up: int
) -> None:
    default = engine_module.CATCH_UP_TICKS
    engine_module.CATCH_UP_TICKS = catch_up  # 0: every checkpoint saves every rule
    try:
        check(loaded, script)
    finally:
        engine_module.CATCH_UP_TICKS = default


def check(loaded: list[tuple[Rule, RuleState]], script: list[tuple[Any, ...]]) -> None:
    eng, ref, saved = engine(), Reference(), Saved()
    history: list[Tick] = []
    fired: set[tuple[int, int]] = set()
    ts, next_rule, version = T0, 1, 0

    def run(ticks: list[Tick]) -> None:
        changes = eng._evaluate(ticks)
        saved.commit(changes)
        got = [(c.rule_id, c.firing, c.state) for c in changes]
        want = [change for tick in ticks for change in ref.evaluate(tick)]
        assert got == want
        fired.update((ident, firing.tick_id) for ident, firing, _ in want)

    def add(ident: int, rule: Rule, state: RuleState) -> None:
        nonlocal version
        version += 1
        eng._add(StoredRule(ident, "local", rule, copy(state), version, 0))
        ref.rules[ident] = (rule, copy(state))
        saved.rows[ident] = (version, state.to_json())

    def drop(ident: int) -> None:
        eng._drop(ident)
        ref.rules.pop(ident, None)
        saved.rows.pop(ident, None)

    def states(entries: Any) -> dict[int, dict[str, Any]]:
        return {e.id: e.state.to_json() for e in entries if e.rule.kind is not Kind.PCT_MOVE}

    for rule, state in loaded:
        add(next_rule, rule, state)
        next_rule += 1
    for op in script:
        head = history[-1].id if history else 0
        if op[0] == "ticks":
            batch = []
            for pair, price, step in op[1]:
                ts += step
                batch.append(Tick(head + len(batch) + 1, pair, price, ts, ("kraken",)))
            history += batch
            run(batch)
        elif op[0] == "add":
            _, rule, state, when = op
            start = {"now": head, "behind": max(0, head - 5), "ahead": head + 2}[when]
            add(next_rule, rule, replace(state, last_tick_id=start))
            next_rule += 1
            run([t for t in history if t.id > start])  # the rewind's replay
        elif op[0] == "replace" and ref.rules:
            _, pick, rule = op
            ident = list(ref.rules)[pick % len(ref.rules)]
            drop(ident)
            add(ident, rule, RuleState(last_tick_id=head))
        elif op[0] == "drop" and ref.rules:
            drop(list(ref.rules)[op[1] % len(ref.rules)])
        elif op[0] == "replay":
            run(history[-op[1] :])
        elif op[0] == "checkpoint":
            saved.commit(eng._checkpoints())
        elif op[0] == "restart":
            definitions = {ident: rule for ident, (rule, _) in ref.rules.items()}
            again, made = restarted(saved, definitions, history)
            assert made <= fired  # a firing made again is recorded once (rule, tick)
            want = {i: s for i, (r, s) in ref.rules.items() if r.kind is not Kind.PCT_MOVE}
            assert states(again.rules()) == {i: s.to_json() for i, s in want.items()}
    final = {e.id: e.state.to_json() for e in eng.rules()}
    assert final == {ident: state.to_json() for ident, (_, state) in ref.rules.items()}


def test_a_quiet_tick_visits_no_level_rule() -> None:
    """Far from every level, a tick evaluates nothing; near one, only that rule."""
    eng = engine()
    for i in range(1000):
        rule = Rule(PAIRS[0], Kind.CROSSES, level=D(1000 + i), hysteresis=D(1))
        eng._add(StoredRule(i, "local", rule, RuleState(), 1, 0))
    index: PairIndex = eng._by_pair[PAIRS[0]]
    assert eng._evaluate([Tick(1, PAIRS[0], D(500), T0, ("kraken",))]) == []  # all arm up
    assert index.evaluate(Tick(2, PAIRS[0], D(501), T0 + 1000, ("kraken",))) == []
    near = Tick(3, PAIRS[0], D("1000.5"), T0 + 2000, ("kraken",))
    (commit,) = eng._evaluate([near])
    assert commit.rule_id == 0 and commit.firing is not None and commit.firing.direction == "up"
    # the first tick changed every rule: all but the one whose firing saved it are saved,
    # as of the tick that changed them (a restart replays from there to the same state)
    saved = eng._checkpoints()
    assert [c.rule_id for c in saved] == list(range(1, 1000))
    assert {c.state["last_tick_id"] for c in saved} == {1}
    assert eng._checkpoints() == []
    # every rule saw every tick all the same
    assert {e.state.last_tick_id for e in eng.rules()} == {3}


def test_a_cooling_state_rule_sleeps_until_its_cooldown_ends() -> None:
    eng = engine()
    rule = Rule(PAIRS[0], Kind.ABOVE, level=D(100), frequency=Frequency(True, cooldown_s=3))
    eng._add(StoredRule(1, "local", rule, RuleState(), 1, 0))
    index: PairIndex = eng._by_pair[PAIRS[0]]
    visited = [
        len(index.evaluate(Tick(i + 1, PAIRS[0], D(101), T0 + i * 1000, ("kraken",))))
        for i in range(7)
    ]
    assert visited == [1, 0, 0, 1, 0, 0, 1]  # fired at 0, 3 and 6; asleep between


def test_removed_rules_leave_no_heap_entries_behind_for_long() -> None:
    index = PairIndex(0)
    rule = Rule(PAIRS[0], Kind.ABOVE, level=D(100), expires_ms=T0 + 5000)
    for i in range(300):
        index.add(Entry(i, "local", rule, RuleState(), 1))
    for i in range(250):
        index.remove(i)
    assert len(index._expiry) <= 2 * len(index) + 64
    # the rules left still end at their expiry, and only they are visited
    ended = index.evaluate(Tick(1, PAIRS[0], D(50), T0 + 5000, ("kraken",)))
    assert sorted(e.id for e, _ in ended) == list(range(250, 300))
    assert all(e.state.done for e, _ in ended)
