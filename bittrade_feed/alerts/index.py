"""The rules of one pair, indexed so that a tick visits only the rules it can change.

The plain way is to run ``evaluate`` on every rule of the tick's pair. Nearly always that
changes nothing but ``last_tick_id``: the price is nowhere near the level. This index
gives the same firings, in the same order, and the same states, while a tick with no
rule near its price costs two binary searches and two heap peeks.

**What can change a level rule.** ``evaluate`` changes a rule's state only through these
conditions (``rules._crossing`` and ``rules._condition``), so a rule whose conditions are
all false at the tick's price is left as it was, ``last_tick_id`` aside:

- an edge rule armed up changes when ``price > level`` (it crosses up, and disarms);
  not armed up, when ``price <= level - hysteresis`` (it arms). Mirrored for down:
  armed, ``price < level``; not armed, ``price >= level + hysteresis``. So an edge rule
  always has exactly two *triggers*, half-lines of prices, one per direction. After any
  evaluation at price ``p`` neither contains ``p`` (evaluating ``p`` again is a no-op:
  a crossing disarms the side it crossed, and arming at ``p`` puts the trigger on the
  other side of the level), so while the price stays put nothing needs visiting, and a
  move from ``p0`` to ``p1`` visits only the triggers between them.
- ``above`` fires while ``price > level`` (``below``: ``<``), unless a cooldown holds it.
  Its one trigger is that half-line, and it does contain the price while the state
  holds: such a rule is visited on every tick, and it fires on each of them unless it is
  cooling down. A cooling rule (fired, and the tick's time is before ``last_fired_ms +
  cooldown``) cannot change on any tick before then, so it sleeps in a heap keyed by
  that time and is put back before the first tick at or after it. Work per tick is then
  the firings plus the wake-ups, not the number of rules in their state.
- every rule ends (``done``) at the first tick at or after ``expires_ms``: a heap keyed
  by expiry visits exactly those.
- ``pct_move`` rules keep a window of every tick: all of them are visited on every tick.

Up triggers (``price > x`` or ``>= x``) are kept in one sorted list, down triggers in
another; the ones a price satisfies are a prefix of the first and a suffix of the second,
found by bisection. Visited rules are evaluated in the order they were added (the order
of the plain loop), so firings come out in the same order.

**last_tick_id.** A rule not visited must behave exactly as if it had seen the tick. The
index keeps ``high``, the highest tick id of the pair it has evaluated; every *synced*
rule has, in effect, ``last_tick_id == high``, though its field may still hold the id
of the last tick that visited it. That matters in three places:

- replays (``evaluate`` skips ``tick.id <= last_tick_id``): a tick at or below ``high``
  is skipped for every synced rule, as the plain loop would skip it for every rule that
  saw it; such a rule is never handed a tick its stale field would let through.
- rules that have not seen what the others saw: a rule added with a ``last_tick_id``
  other than ``high`` (a create or a replace while ticks are in flight, or rules loaded
  at start with different saved ids) is *unsynced*: it is evaluated the plain way, on
  every tick of the pair, and ``evaluate`` itself skips what it has seen. Once its
  ``last_tick_id`` equals ``high`` it has seen exactly what the synced rules have and
  joins them (at the latest on the pair's first tick above both).
- checkpoints and restarts: the engine saves a rule's state with each firing and, at a
  checkpoint, when it changed since; at start it replays the stored ticks from the lowest
  saved ``last_tick_id``. A rule the index did not visit changed in nothing but that id,
  so saving it at every checkpoint (as the plain loop did: 10,000 rows every 10 s) buys
  only a shorter replay. Its saved state with its older id replays to the same state, as
  the ticks since were outside its triggers. So ``catch_up`` writes ``high`` into the
  lagging fields and hands them to be saved only once ``high`` has moved ``every`` ids
  since the last time, all at once: the replay after a restart stays bounded (about
  ``every`` ticks), and most rules come back with one shared id. The engine makes each
  pair's index at start with ``high`` at the lowest saved id, so those rules are synced
  at once and the rest (ahead of it) join as the replay reaches them.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from decimal import Decimal

from bittrade_feed.alerts.rules import (
    EDGE_KINDS,
    Firing,
    Kind,
    Rule,
    RuleState,
    evaluate,
)
from bittrade_feed.models import Tick


@dataclass(slots=True)
class Entry:
    """A loaded rule: its definition, the version it has, and its live state."""

    id: int
    owner: str
    rule: Rule
    state: RuleState
    version: int


Key = tuple[Decimal, int, int]
"""(threshold, tie-break flag, slot sequence number): unique, and ordered so that at one
threshold the trigger a price equal to it satisfies sorts on the satisfied side."""
AT_OR_ABOVE, ABOVE = 0, 1
"""Up-list flags: ``price >= x`` before ``price > x``; a price ``p`` satisfies exactly
the keys below ``(p, ABOVE)``."""
BELOW, AT_OR_BELOW = 0, 1
"""Down-list flags: ``price < x`` before ``price <= x``; ``p`` satisfies exactly the keys
from ``(p, AT_OR_BELOW)`` on."""

Advanced = tuple[Entry, Firing | None]
"""A rule the tick moved on (its ``last_tick_id`` changed), and its firing if any."""


@dataclass(slots=True)
class Slot:
    """One rule's place in the index."""

    entry: Entry
    seq: int
    """Order of addition: the plain loop's order, and the key tie-break."""
    keys: list[tuple[bool, Key]] = field(default_factory=list)
    """Its triggers now: (in the up list?, key)."""
    sleeping_until: int | None = None
    """Set while in the cooldown heap: no trigger until a tick at or after this time."""
    synced: bool = False


class PairIndex:
    """Every loaded rule of one pair."""

    def __init__(self, high: int) -> None:
        self.high = high
        """The highest tick id evaluated for the synced rules (``last_tick_id`` of each)."""
        self._caught_up = high
        """``high`` when ``catch_up`` last brought the lagging rules up to it."""
        self._slots: dict[int, Slot] = {}
        """By sequence number, in order of addition."""
        self._seq_of: dict[int, int] = {}
        """Rule id to sequence number."""
        self._next_seq = 0
        self._up: list[Key] = []
        self._down: list[Key] = []
        self._moves: dict[int, Slot] = {}
        self._unsynced: dict[int, Slot] = {}
        self._synced = 0
        """Synced rules that are not done."""
        self._expiry: list[tuple[int, int]] = []
        """(expires_ms, seq) of synced rules; stale entries are skipped when popped."""
        self._sleep: list[tuple[int, int]] = []
        """(wake at ms, seq) of cooling state rules; stale entries are skipped when popped."""

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, entry: Entry) -> None:
        """Index a rule (after every rule already in it)."""
        slot = Slot(entry, self._next_seq)
        self._next_seq += 1
        self._slots[slot.seq] = slot
        self._seq_of[entry.id] = slot.seq
        if entry.state.done:
            return  # evaluates nothing more: never visited
        if entry.state.last_tick_id == self.high:
            self._sync(slot)
        else:
            self._unsynced[slot.seq] = slot

    def remove(self, rule_id: int) -> None:
        """Forget a rule (no-op if absent); its heap entries go stale."""
        seq = self._seq_of.pop(rule_id, None)
        if seq is None:
            return
        slot = self._slots.pop(seq)
        self._untrigger(slot)
        self._moves.pop(seq, None)
        self._unsynced.pop(seq, None)
        if slot.synced and not slot.entry.state.done:
            self._synced -= 1
        # Heap entries of removed rules are skipped when popped, but one with a far
        # expiry may wait long: rebuild once they outnumber the rules (edits are rare).
        if len(self._expiry) + len(self._sleep) > 2 * len(self._slots) + 64:
            self._expiry = [e for e in self._expiry if e[1] in self._slots]
            self._sleep = [e for e in self._sleep if e[1] in self._slots]
            heapq.heapify(self._expiry)
            heapq.heapify(self._sleep)

    def evaluate(self, tick: Tick) -> list[Advanced]:
        """Evaluate ``tick`` (of this pair) on every rule it can change, in rule order."""
        fresh = tick.id > self.high
        chosen = list(self._unsynced.values())
        if fresh:
            chosen += self._due(tick)
            chosen.sort(key=lambda s: s.seq)
        advanced: list[Advanced] = []
        for slot in chosen:
            state = slot.entry.state
            before = state.last_tick_id
            firing = evaluate(slot.entry.rule, state, tick)
            if state.last_tick_id != before:
                advanced.append((slot.entry, firing))
            if slot.synced:
                self._place(slot, tick.ts_ms)
        if fresh:
            self.high = tick.id
        for slot in list(self._unsynced.values()):
            if slot.entry.state.done:
                del self._unsynced[slot.seq]
            elif slot.entry.state.last_tick_id == self.high:
                del self._unsynced[slot.seq]
                self._sync(slot)
        return advanced

    def catch_up(self, every: int) -> list[Entry]:
        """Synced rules whose ``last_tick_id`` field is behind ``high``, brought up to it.

        Only once ``high`` has moved at least ``every`` ids since the last catch-up
        (``every=0``: now); empty otherwise.
        """
        if self.high - self._caught_up < every:
            return []
        self._caught_up = self.high
        behind = []
        for slot in self._slots.values():
            state = slot.entry.state
            if slot.synced and not state.done and state.last_tick_id < self.high:
                state.last_tick_id = self.high
                behind.append(slot.entry)
        return behind

    # -- internals -----------------------------------------------------------------------

    def _sync(self, slot: Slot) -> None:
        slot.synced = True
        self._synced += 1
        expires = slot.entry.rule.expires_ms
        if expires is not None:
            heapq.heappush(self._expiry, (expires, slot.seq))
        self._place(slot, None)

    def _due(self, tick: Tick) -> list[Slot]:
        """The synced rules ``tick`` may change, with their triggers taken out."""
        found: dict[int, Slot] = {}
        while self._expiry and self._expiry[0][0] <= tick.ts_ms:
            _, seq = heapq.heappop(self._expiry)
            slot = self._slots.get(seq)
            if slot is not None and not slot.entry.state.done:
                found[seq] = slot
        while self._sleep and self._sleep[0][0] <= tick.ts_ms:
            wake, seq = heapq.heappop(self._sleep)
            slot = self._slots.get(seq)
            if slot is not None and slot.sleeping_until == wake:
                slot.sleeping_until = None
                self._trigger(slot)
        price = tick.price
        for key in self._up[: bisect_left(self._up, (price, ABOVE))]:
            found[key[2]] = self._slots[key[2]]
        for key in self._down[bisect_left(self._down, (price, AT_OR_BELOW)) :]:
            found[key[2]] = self._slots[key[2]]
        found.update(self._moves)
        due = list(found.values())
        for slot in due:
            self._untrigger(slot)
        return due

    def _place(self, slot: Slot, ts_ms: int | None) -> None:
        """Give an evaluated synced rule the triggers its new state calls for."""
        entry = slot.entry
        state, rule = entry.state, entry.rule
        self._untrigger(slot)
        slot.sleeping_until = None
        if state.done:
            self._moves.pop(slot.seq, None)
            self._synced -= 1
            return
        if rule.kind is Kind.PCT_MOVE:
            self._moves[slot.seq] = slot
            return
        if rule.kind not in EDGE_KINDS and state.last_fired_ms is not None and ts_ms is not None:
            wake = state.last_fired_ms + rule.frequency.cooldown_s * 1000
            if ts_ms < wake:
                slot.sleeping_until = wake
                heapq.heappush(self._sleep, (wake, slot.seq))
                return
        self._trigger(slot)

    def _trigger(self, slot: Slot) -> None:
        rule, state, seq = slot.entry.rule, slot.entry.state, slot.seq
        level, band = rule.level, rule.hysteresis
        if rule.kind is Kind.ABOVE:
            slot.keys = [(True, (level, ABOVE, seq))]
        elif rule.kind is Kind.BELOW:
            slot.keys = [(False, (level, BELOW, seq))]
        else:
            # One trigger per direction: armed, the crossing; not armed, the re-arming.
            # Both may be in the same list (armed up and not armed down: both upwards).
            slot.keys = [
                (True, (level, ABOVE, seq))
                if state.armed_up
                else (False, (level - band, AT_OR_BELOW, seq)),
                (False, (level, BELOW, seq))
                if state.armed_down
                else (True, (level + band, AT_OR_ABOVE, seq)),
            ]
        for up, key in slot.keys:
            insort(self._up if up else self._down, key)

    def _untrigger(self, slot: Slot) -> None:
        for up, key in slot.keys:
            keys = self._up if up else self._down
            del keys[bisect_left(keys, key)]
        slot.keys = []
