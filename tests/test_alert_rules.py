"""Alert rule evaluation: tables per kind, and the "never"/"always" claims as properties."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.alerts.rules import (
    MAX_BUCKETS,
    Firing,
    Frequency,
    Kind,
    Rule,
    RuleState,
    Window,
    evaluate,
)
from bittrade_feed.models import Tick

PAIR = "BTC-USD"
T0 = 1_763_900_000_000
D = Decimal


def ticks(prices: Iterable[str | int], *, step_ms: int = 1000, start_id: int = 1) -> list[Tick]:
    """One tick per price, ids from ``start_id``, ``step_ms`` apart from ``T0``."""
    return [
        Tick(start_id + i, PAIR, D(str(p)), T0 + i * step_ms, ("coinbase", "kraken"))
        for i, p in enumerate(prices)
    ]


def run(rule: Rule, feed: Sequence[Tick], state: RuleState | None = None) -> list[Firing]:
    state = state if state is not None else RuleState()
    return [f for t in feed if (f := evaluate(rule, state, t)) is not None]


def fired_at(rule: Rule, prices: Sequence[str | int]) -> list[int]:
    """The indexes of ``prices`` whose tick fired."""
    return [f.tick_id - 1 for f in run(rule, ticks(prices))]


REPEAT = Frequency(repeat=True)


@pytest.mark.parametrize(
    ("kind", "level", "band", "prices", "expected"),
    [
        # states fire at once and keep firing (a repeating rule without cooldown)
        (Kind.ABOVE, 100, 0, [99, 101, 102, 100, 103], [1, 2, 4]),
        (Kind.ABOVE, 100, 0, [100, 100], []),  # equality is not above
        (Kind.BELOW, 100, 0, [101, 99, 100, 98], [1, 3]),
        (Kind.BELOW, 100, 0, [100], []),
        # a jump over the level between two ticks is a crossing
        (Kind.CROSSES_UP, 100, 0, [50, 150], [1]),
        (Kind.CROSSES_DOWN, 100, 0, [150, 50], [1]),
        (Kind.CROSSES, 100, 0, [50, 150, 50], [1, 2]),
        # the first tick has no previous sample: it arms, it cannot cross
        (Kind.CROSSES_UP, 100, 0, [150, 160], []),
        (Kind.CROSSES_DOWN, 100, 0, [50, 40], []),
        # equality at the level: touching is not crossing; leaving from it is
        (Kind.CROSSES_UP, 100, 0, [99, 100, 100, 101], [3]),
        (Kind.CROSSES_UP, 100, 0, [100, 101], [1]),
        (Kind.CROSSES_DOWN, 100, 0, [101, 100, 99], [2]),
        (Kind.CROSSES_DOWN, 100, 0, [100, 99], [1]),
        # without a band a price hovering at the level crosses every time it leaves it
        (Kind.CROSSES_UP, 100, 0, [99, 101, 100, 101, 100, 101], [1, 3, 5]),
        # hysteresis: re-arms only after leaving the band on the other side
        (Kind.CROSSES_UP, 100, 2, [97, 101, 99, 101, 99, 101], [1]),
        (Kind.CROSSES_UP, 100, 2, [97, 101, 99, 98, 101], [1, 4]),  # 98 = level - band
        (Kind.CROSSES_UP, 100, 2, [99, 101], []),  # never below the band: not armed
        (Kind.CROSSES_DOWN, 100, 2, [103, 99, 101, 99, 102, 99], [1, 5]),
        (Kind.CROSSES, 100, 2, [97, 101, 99, 101, 103, 99, 97, 101], [1, 5, 7]),
    ],
)
def test_level_kinds(
    kind: Kind, level: int, band: int, prices: list[int], expected: list[int]
) -> None:
    rule = Rule(PAIR, kind, level=D(level), hysteresis=D(band), frequency=REPEAT)
    assert fired_at(rule, prices) == expected


def test_crossing_reports_its_direction() -> None:
    rule = Rule(PAIR, Kind.CROSSES, level=D(100), frequency=REPEAT)
    firings = run(rule, ticks([99, 101, 99]))
    assert [f.direction for f in firings] == ["up", "down"]
    assert firings[0].detail == "BTC-USD 101 crossed above 100"
    assert firings[0].to_json()["price"] == "101"


def test_once_fires_a_single_time() -> None:
    rule = Rule(PAIR, Kind.CROSSES, level=D(100))
    state = RuleState()
    assert fired_at(rule, [99, 101, 99, 101]) == [1]
    run(rule, ticks([99, 101]), state)
    assert state.done and state.fired == 1


@pytest.mark.parametrize(
    ("frequency", "prices", "expected"),
    [
        # a 3 s cooldown: ticks 1 s apart, the state holds on every tick
        (Frequency(repeat=True, cooldown_s=3), [101] * 8, [0, 3, 6]),
        (Frequency(repeat=True, max_count=2), [101] * 5, [0, 1]),
        (Frequency(repeat=True, cooldown_s=2, max_count=2), [101] * 9, [0, 2]),
    ],
)
def test_frequency(frequency: Frequency, prices: list[int], expected: list[int]) -> None:
    assert fired_at(Rule(PAIR, Kind.ABOVE, level=D(100), frequency=frequency), prices) == expected


def test_an_edge_during_the_cooldown_is_dropped_not_postponed() -> None:
    rule = Rule(PAIR, Kind.CROSSES_UP, level=D(100), frequency=Frequency(True, cooldown_s=10))
    # crosses at 1 and 3 (inside the cooldown: dropped), then stays above: nothing later
    assert fired_at(rule, [99, 101, 99, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]) == [1]


def test_expiry_is_tick_time_and_ends_the_rule() -> None:
    rule = Rule(PAIR, Kind.ABOVE, level=D(100), frequency=REPEAT, expires_ms=T0 + 2000)
    state = RuleState()
    assert [f.tick_id for f in run(rule, ticks([101, 101, 101, 101]), state)] == [1, 2]
    assert state.done


def test_replayed_and_foreign_ticks_fire_nothing() -> None:
    rule = Rule(PAIR, Kind.CROSSES_UP, level=D(100), frequency=REPEAT)
    state = RuleState()
    feed = ticks([99, 101])
    assert len(run(rule, feed, state)) == 1
    before = state.to_json()
    assert run(rule, feed, state) == []
    assert state.to_json() == before
    other = Tick(9, "ETH-USD", D(1), T0, ("kraken",))
    assert evaluate(rule, state, other) is None
    assert state.last_tick_id == 2


def test_state_round_trips_through_json() -> None:
    rule = Rule(PAIR, Kind.CROSSES, level=D(100), hysteresis=D(1), frequency=REPEAT)
    state = RuleState()
    run(rule, ticks([98, 101, 102]), state)
    again = RuleState.from_json(state.to_json())
    assert again.to_json() == state.to_json()
    # the copy goes on exactly as the original would
    more = ticks([98, 101], start_id=4)
    assert [f.tick_id for f in run(rule, more, again)] == [
        f.tick_id for f in run(rule, more, state)
    ]


# -- pct_move: windows on tick time -------------------------------------------------------


def pct_rule(pct: str, window_s: int, direction: str = "either", **kw: object) -> Rule:
    return Rule(PAIR, Kind.PCT_MOVE, pct=D(pct), window_s=window_s, direction=direction, **kw)  # type: ignore[arg-type]


def at(points: Sequence[tuple[int, str]]) -> list[Tick]:
    """Ticks at chosen seconds after ``T0`` (the injected clock)."""
    return [
        Tick(i + 1, PAIR, D(p), T0 + s * 1000, ("coinbase",)) for i, (s, p) in enumerate(points)
    ]


@pytest.mark.parametrize(
    ("rule", "points", "expected"),
    [
        (pct_rule("3", 60), [(0, "100"), (30, "102"), (60, "103")], [3]),  # edge of window: in
        (pct_rule("3", 60), [(0, "100"), (61, "103")], []),  # fell out of the window
        (pct_rule("3", 60), [(0, "100"), (30, "102.99")], []),
        (pct_rule("3", 60, "up"), [(0, "100"), (10, "96")], []),
        (pct_rule("3", 60, "down"), [(0, "100"), (10, "97")], [2]),
        (pct_rule("3", 60, "down"), [(0, "100"), (10, "103")], []),
        # measured from the window's low, not its first price
        (pct_rule("5", 600, "up"), [(0, "100"), (60, "95"), (120, "99.75")], [3]),
        # after a firing the window restarts: the same move does not fire again
        (
            pct_rule("3", 60, frequency=Frequency(repeat=True)),
            [(0, "100"), (10, "103"), (20, "103.5"), (30, "106.1")],
            [2, 4],
        ),
    ],
)
def test_pct_move(rule: Rule, points: list[tuple[int, str]], expected: list[int]) -> None:
    assert [f.tick_id for f in run(rule, at(points))] == expected


def test_pct_move_reports_the_reference() -> None:
    (firing,) = run(pct_rule("3", 60), at([(0, "100"), (5, "90")]))
    assert firing.direction == "down"
    assert firing.reference == D(100)
    assert firing.detail == "BTC-USD 90 fell 10 % from 100 within 60 s"


def test_a_day_window_keeps_bounded_memory() -> None:
    window = Window(86_400)
    for s in range(0, 86_400 * 2, 7):
        # a zigzag defeats the monotonic pruning as much as it can
        window.add(T0 + s * 1000, D(100 + (s % 14) - 7 if s % 2 else 100 - (s % 13)))
    assert len(window) <= MAX_BUCKETS + 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 1000)), min_size=1, max_size=60))
def test_window_low_and_high_match_a_brute_force(steps: list[tuple[int, int]]) -> None:
    window = Window(60)  # 1 s buckets: exact to the second
    ts, seen = T0, []
    for gap, price in steps:
        ts += gap * 1000
        window.add(ts, D(price))
        seen.append((ts, price))
        inside = [p for t, p in seen if t // 1000 >= (ts - 60_000) // 1000]
        assert window.low() == min(inside)
        assert window.high() == max(inside)


# -- properties ----------------------------------------------------------------------------

prices = st.lists(st.integers(90, 110), min_size=1, max_size=80)
kinds = st.sampled_from(list(Kind))
frequencies = st.builds(
    Frequency,
    repeat=st.booleans(),
    cooldown_s=st.integers(0, 5),
    max_count=st.none() | st.integers(1, 4),
)


def any_rule(kind: Kind, frequency: Frequency, band: int) -> Rule:
    return Rule(
        PAIR,
        kind,
        level=D(100),
        hysteresis=D(band),
        pct=D(2),
        window_s=60,
        frequency=frequency,
    )


@settings(max_examples=300, deadline=None)
@given(kinds, prices, st.integers(0, 5))
def test_a_once_rule_fires_at_most_once(kind: Kind, feed: list[int], band: int) -> None:
    assert len(run(any_rule(kind, Frequency(), band), ticks(feed))) <= 1


@settings(max_examples=300, deadline=None)
@given(kinds, frequencies, prices, st.integers(0, 5), st.integers(200, 3000))
def test_repeats_are_a_cooldown_apart_and_capped(
    kind: Kind, frequency: Frequency, feed: list[int], band: int, step_ms: int
) -> None:
    firings = run(any_rule(kind, frequency, band), ticks(feed, step_ms=step_ms))
    gaps = [b.ts_ms - a.ts_ms for a, b in itertools.pairwise(firings)]
    assert all(gap >= frequency.cooldown_s * 1000 for gap in gaps)
    limit = frequency.limit
    assert limit is None or len(firings) <= limit
    assert [f.count for f in firings] == list(range(1, len(firings) + 1))


def sign_changes(feed: Sequence[int], level: int, band: int) -> tuple[int, int]:
    """Up and down crossings counted independently of the state machine.

    Label each price ``L`` (at or below ``level - band``: armed for up), ``F`` (strictly
    above ``level``: fired) for up; mirrored for down. Drop the others, collapse repeats: every
    ``L`` followed by ``H`` is one up crossing.
    """

    def count(labels: list[str]) -> int:
        collapsed = [x for i, x in enumerate(labels) if i == 0 or labels[i - 1] != x]
        return sum(1 for a, b in itertools.pairwise(collapsed) if (a, b) == ("A", "F"))

    up = ["A" if p <= level - band else "F" if p > level else "" for p in feed]
    down = ["A" if p >= level + band else "F" if p < level else "" for p in feed]
    return count([x for x in up if x]), count([x for x in down if x])


@settings(max_examples=500, deadline=None)
@given(prices, st.integers(0, 6))
def test_crossings_equal_sign_changes_beyond_the_band(feed: list[int], band: int) -> None:
    up, down = sign_changes(feed, 100, band)
    for kind, expected in (
        (Kind.CROSSES_UP, up),
        (Kind.CROSSES_DOWN, down),
        (Kind.CROSSES, up + down),
    ):
        assert len(run(any_rule(kind, REPEAT, band), ticks(feed))) == expected


@settings(max_examples=300, deadline=None)
@given(kinds, frequencies, prices, st.integers(0, 5), st.data())
def test_replaying_ticks_fires_nothing_new(
    kind: Kind, frequency: Frequency, feed: list[int], band: int, data: st.DataObject
) -> None:
    rule, state = any_rule(kind, frequency, band), RuleState()
    all_ticks = ticks(feed)
    first = run(rule, all_ticks, state)
    # any replay of already evaluated ticks, in any order, repeated
    replay = data.draw(st.lists(st.sampled_from(all_ticks), max_size=30))
    snapshot = state.to_json()
    assert run(rule, replay, state) == []
    assert state.to_json() == snapshot
    assert len({f.tick_id for f in first}) == len(first)
