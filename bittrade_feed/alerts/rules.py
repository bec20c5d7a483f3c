"""Price alert rules, evaluated one committed tick at a time: pure, no I/O.

``evaluate(rule, state, tick)`` updates the rule's ``RuleState`` and returns a ``Firing``
or ``None``. Everything it needs is in its arguments, so the engine can replay stored
ticks after a restart and reach the same state and the same firings.

Time is the tick's own ``ts_ms`` (when the price was made), never the evaluating
machine's clock: cooldowns, windows and expiry then give the same answer on replay, on
another node, and in tests that build ticks with chosen times.

Every committed tick met the aggregation quorum: ``feed.aggregate`` makes no
``TickDraft`` without one, and only committed rows reach tick-log listeners, so there is
no per-tick status to filter on here.

Kinds:

- ``above`` / ``below``: states; true while the price is strictly beyond ``level``.
- ``crosses_up`` / ``crosses_down`` / ``crosses``: edges, as TradingView's crossover: up
  fires on a tick strictly above ``level`` after the price was at or below
  ``level - hysteresis``; down mirrors it. After a crossing that direction re-arms only
  once the price has left the band on the other side, so a price hovering at the level
  does not flap. Only samples exist, so a jump from below to above between two ticks is a
  crossing like any other.
- ``pct_move``: the price moved ``pct`` percent or more (``up``, ``down`` or ``either``)
  against the lowest (up) or highest (down) price of the last ``window_s`` seconds. After
  a firing the window restarts from that tick, so one move fires once.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bittrade_feed.models import Tick, format_ts, plain


class Kind(StrEnum):
    """What a rule watches."""

    ABOVE = "above"
    BELOW = "below"
    CROSSES_UP = "crosses_up"
    CROSSES_DOWN = "crosses_down"
    CROSSES = "crosses"
    PCT_MOVE = "pct_move"


STATE_KINDS = frozenset({Kind.ABOVE, Kind.BELOW})
EDGE_KINDS = frozenset({Kind.CROSSES_UP, Kind.CROSSES_DOWN, Kind.CROSSES})
LEVEL_KINDS = STATE_KINDS | EDGE_KINDS
DIRECTIONS = ("up", "down", "either")

MIN_WINDOW_S = 60
MAX_WINDOW_S = 86_400
MAX_BUCKETS = 720
"""A ``pct_move`` window keeps at most this many buckets (one minimum and one maximum
each), so its memory is bounded whatever the tick rate: a day is 120 s buckets, an hour
5 s, ten minutes or less 1 s."""


@dataclass(frozen=True, slots=True)
class Frequency:
    """How often a rule may fire: ``once``, or repeating with a cooldown and/or a cap."""

    repeat: bool = False
    cooldown_s: int = 0
    """Seconds (of tick time) between two firings of a repeating rule."""
    max_count: int | None = None
    """A repeating rule stops after this many firings (``None``: no cap)."""

    @property
    def limit(self) -> int | None:
        """How many firings the rule may have in all (``None``: unlimited)."""
        return self.max_count if self.repeat else 1


ONCE = Frequency()


@dataclass(frozen=True, slots=True)
class Rule:
    """What to watch on one pair; the fields a kind does not use stay at their defaults."""

    pair: str
    kind: Kind
    level: Decimal = Decimal(0)
    """The threshold of the level kinds."""
    hysteresis: Decimal = Decimal(0)
    """Price units below (up) or above (down) the level the price must reach to re-arm."""
    pct: Decimal = Decimal(0)
    """``pct_move``: the move in percent (3 means 3 %)."""
    window_s: int = MIN_WINDOW_S
    direction: str = "either"
    """``pct_move``: ``up``, ``down`` or ``either``."""
    frequency: Frequency = ONCE
    expires_ms: int | None = None
    """Ticks made at or after this time (epoch ms) fire nothing and end the rule."""
    webhooks: tuple[str, ...] = ()
    """Ids of the owner's webhook endpoints each firing is delivered to (besides streams)."""


class Window:
    """The lowest and highest price of the last ``window_s`` seconds, in bounded memory.

    Two monotonic deques of ``(bucket, price)``: the minimum deque's prices increase from
    the front, the maximum's decrease, so the front is the answer. One entry per bucket at
    most (a later price in the same bucket replaces a worse one or is dropped), so each
    deque holds at most ``MAX_BUCKETS + 1`` entries. A price stays in the window while its
    bucket is not older than the bucket of ``now - window``.
    """

    __slots__ = ("_bucket_ms", "_hi", "_lo", "_window_ms")

    def __init__(self, window_s: int) -> None:
        self._window_ms = window_s * 1000
        self._bucket_ms = max(1000, -(-self._window_ms // MAX_BUCKETS))
        self._lo: deque[tuple[int, Decimal]] = deque()
        self._hi: deque[tuple[int, Decimal]] = deque()

    def add(self, ts_ms: int, price: Decimal) -> None:
        """Take in one price and forget what fell out of the window."""
        bucket = ts_ms // self._bucket_ms
        _push(self._lo, bucket, price, operator.le)
        _push(self._hi, bucket, price, operator.ge)
        oldest = (ts_ms - self._window_ms) // self._bucket_ms
        for side in (self._lo, self._hi):
            while side and side[0][0] < oldest:
                side.popleft()

    def low(self) -> Decimal | None:
        """The lowest price in the window (``None`` when empty)."""
        return self._lo[0][1] if self._lo else None

    def high(self) -> Decimal | None:
        """The highest price in the window (``None`` when empty)."""
        return self._hi[0][1] if self._hi else None

    def clear(self) -> None:
        """Forget every price (after a firing, so one move fires once)."""
        self._lo.clear()
        self._hi.clear()

    def __len__(self) -> int:
        return max(len(self._lo), len(self._hi))


def _push(
    side: deque[tuple[int, Decimal]],
    bucket: int,
    price: Decimal,
    keeps: Callable[[Decimal, Decimal], bool],
) -> None:
    # Entries the new price beats can never be the answer again: it is newer and better.
    while side and not keeps(side[-1][1], price):
        side.pop()
    if side and side[-1][0] == bucket:
        return  # the bucket already has a price at least as good, expiring with this one
    side.append((bucket, price))


@dataclass(slots=True)
class RuleState:
    """What a rule remembers between ticks; ``to_json`` is what the store keeps."""

    last_tick_id: int = 0
    """The highest tick id evaluated; a tick at or below it is a replay and fires nothing."""
    fired: int = 0
    last_fired_ms: int | None = None
    armed_up: bool = False
    armed_down: bool = False
    done: bool = False
    """Fired its last time or expired: evaluates nothing more."""
    window: Window | None = field(default=None, repr=False)
    """``pct_move`` only; rebuilt from stored ticks after a restart, never stored."""

    def to_json(self) -> dict[str, Any]:
        """The stored form (the window is derived data: stored ticks rebuild it)."""
        return {
            "last_tick_id": self.last_tick_id,
            "fired": self.fired,
            "last_fired_ms": self.last_fired_ms,
            "armed_up": self.armed_up,
            "armed_down": self.armed_down,
            "done": self.done,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleState:
        """Read back what ``to_json`` wrote."""
        last_fired = data.get("last_fired_ms")
        return cls(
            last_tick_id=int(data.get("last_tick_id", 0)),
            fired=int(data.get("fired", 0)),
            last_fired_ms=None if last_fired is None else int(last_fired),
            armed_up=bool(data.get("armed_up", False)),
            armed_down=bool(data.get("armed_down", False)),
            done=bool(data.get("done", False)),
        )


@dataclass(frozen=True, slots=True)
class Firing:
    """One time a rule fired: on which tick, and why in words."""

    tick_id: int
    pair: str
    price: Decimal
    ts_ms: int
    kind: Kind
    direction: str | None
    """``up`` / ``down`` for edges and moves, ``None`` for states."""
    detail: str
    count: int
    """This is the rule's ``count``-th firing (from 1)."""
    simulated: bool = False
    reference: Decimal | None = None
    """``pct_move``: the window's price the move was measured from."""

    def to_json(self) -> dict[str, Any]:
        """The ``data`` of an alert message."""
        body: dict[str, Any] = {
            "tick_id": self.tick_id,
            "pair": self.pair,
            "price": plain(self.price),
            "ts": format_ts(self.ts_ms),
            "kind": str(self.kind),
            "direction": self.direction,
            "detail": self.detail,
            "count": self.count,
            "simulated": self.simulated,
        }
        if self.reference is not None:
            body["reference"] = plain(self.reference)
        return body


def evaluate(rule: Rule, state: RuleState, tick: Tick) -> Firing | None:
    """Evaluate ``rule`` on one committed ``tick`` of its pair, updating ``state``."""
    if tick.pair != rule.pair or tick.id <= state.last_tick_id or state.done:
        return None
    state.last_tick_id = tick.id
    if rule.expires_ms is not None and tick.ts_ms >= rule.expires_ms:
        state.done = True
        return None
    hit = _condition(rule, state, tick)
    if hit is None or not _may_fire(rule, state, tick.ts_ms):
        return None
    direction, detail, reference = hit
    if rule.kind is Kind.PCT_MOVE and state.window is not None:
        state.window.clear()
        state.window.add(tick.ts_ms, tick.price)
    state.fired += 1
    state.last_fired_ms = tick.ts_ms
    limit = rule.frequency.limit
    if limit is not None and state.fired >= limit:
        state.done = True
    return Firing(
        tick.id,
        tick.pair,
        tick.price,
        tick.ts_ms,
        rule.kind,
        direction,
        detail,
        state.fired,
        tick.simulated,
        reference,
    )


Hit = tuple[str | None, str, Decimal | None]


def _condition(rule: Rule, state: RuleState, tick: Tick) -> Hit | None:
    # The detail text is made only for a hit: most evaluations are misses.
    price, level = tick.price, rule.level
    if rule.kind is Kind.ABOVE:
        if price > level:
            return None, f"{_name(rule, price)} is above {plain(level)}", None
        return None
    if rule.kind is Kind.BELOW:
        if price < level:
            return None, f"{_name(rule, price)} is below {plain(level)}", None
        return None
    if rule.kind in EDGE_KINDS:
        return _crossing(rule, state, price)
    return _moved(rule, state, tick)


def _name(rule: Rule, price: Decimal) -> str:
    return f"{rule.pair} {plain(price)}"


WANTED = {Kind.CROSSES_UP: "up", Kind.CROSSES_DOWN: "down"}
"""The one direction an edge kind reports (``crosses`` reports both)."""


def _crossing(rule: Rule, state: RuleState, price: Decimal) -> Hit | None:
    level, band = rule.level, rule.hysteresis
    # Both directions are tracked for every edge kind, so a rule's arming does not
    # depend on which direction it reports.
    crossed: str | None = None
    if price > level and state.armed_up:
        state.armed_up = False
        crossed = "up"
    elif price < level and state.armed_down:
        state.armed_down = False
        crossed = "down"
    if price <= level - band:
        state.armed_up = True
    if price >= level + band:
        state.armed_down = True
    if crossed is None or crossed != WANTED.get(rule.kind, crossed):
        return None
    word = "above" if crossed == "up" else "below"
    return crossed, f"{_name(rule, price)} crossed {word} {plain(level)}", None


def _moved(rule: Rule, state: RuleState, tick: Tick) -> Hit | None:
    if state.window is None:
        state.window = Window(rule.window_s)
    window = state.window
    window.add(tick.ts_ms, tick.price)
    price, share = tick.price, rule.pct / 100
    low, high = window.low(), window.high()
    assert low is not None
    assert high is not None
    if rule.direction in ("up", "either") and price >= low * (1 + share) and low > 0:
        rose = f"rose {_pct(price, low)} % from {plain(low)}"
        return "up", f"{_name(rule, price)} {rose} within {rule.window_s} s", low
    if rule.direction in ("down", "either") and price <= high * (1 - share):
        fell = f"fell {_pct(high, price, high)} % from {plain(high)}"
        return "down", f"{_name(rule, price)} {fell} within {rule.window_s} s", high
    return None


def _pct(a: Decimal, b: Decimal, base: Decimal | None = None) -> str:
    change = (a - b) / (base if base is not None else b) * 100
    return plain(change.quantize(Decimal("0.01")))


def _may_fire(rule: Rule, state: RuleState, ts_ms: int) -> bool:
    # A condition met during the cooldown is dropped, not postponed: an edge that fired
    # late would report a crossing that is no longer happening.
    if state.last_fired_ms is None:
        return True
    return ts_ms - state.last_fired_ms >= rule.frequency.cooldown_s * 1000
