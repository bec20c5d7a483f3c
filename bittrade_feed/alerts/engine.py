"""The alert engine: every committed tick through the rules of its pair, saved durably.

The tick log calls ``on_tick`` (a listener: synchronous, cheap, never raises) which only
queues the tick; the engine's own task (``run``) evaluates and commits, so alert work
never delays the broadcast. The queue is bounded: when it overflows, or when a rule is
created or edited, the engine drops what is queued and reads the stored ticks again from
its cursor ("resync"). Evaluation skips every tick at or below a rule's
``last_tick_id``, so reading a tick twice fires nothing twice. Each pair's rules are in a
``PairIndex`` (``alerts.index``): a tick visits only the rules it can change, with the
same firings and states as running every rule; its docstring says why.

Durability: a firing, its rule's new state and its outbox rows are one transaction
(``AlertStore.commit``), retried until it succeeds before anything later is evaluated. A
rule's state is saved with each firing and, when a tick changed it without a firing, at
the next checkpoint (every ``checkpoint_seconds``); a rule no tick changed is saved once
every ``CATCH_UP_TICKS`` ids, only to bound the replay. At start the engine replays the
stored ticks above the lowest saved ``last_tick_id``:
evaluation runs on tick time, so the replay makes again exactly the firings a crash lost
(a firing is unique per rule and tick, so one that was saved is not saved twice).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

import structlog

from bittrade_feed.alerts.backend import RuleBackend
from bittrade_feed.alerts.index import Entry, PairIndex
from bittrade_feed.alerts.rules import Kind, Rule, RuleState, Window
from bittrade_feed.alerts.store import Commit, StoredFiring, StoredRule
from bittrade_feed.clock import Clock
from bittrade_feed.errors import StoreError
from bittrade_feed.models import Tick
from bittrade_feed.ops.metrics import AlertMetrics
from bittrade_feed.store.sqlite import Store

log = structlog.get_logger("bittrade_feed.alerts.engine")

MAX_PENDING = 10_000
"""Ticks queued for evaluation before the engine falls back to reading the store."""
REPLAY_PAGE = 1000
RETRY_FIRST, RETRY_MAX = 0.5, 30.0
"""Seconds before the first retry of a failed commit, and the most between two."""
CATCH_UP_TICKS = 10_000
"""Tick ids between two saves of the rules no tick visited (``PairIndex.catch_up``): the
most ticks a restart replays for them, against one write of every such rule per this
many ids instead of one per checkpoint."""
WARM_LIMIT = 100_000
"""Stored ticks read to refill one ``pct_move`` window at start."""

OnFired = Callable[[str, StoredFiring], None]
"""Called with the owner and each firing once it is committed (delivery hooks in here)."""

__all__ = ["AlertEngine", "Entry", "OnFired"]


class AlertEngine:
    """Evaluates the rules on committed ticks and commits their firings."""

    def __init__(
        self,
        alerts: RuleBackend,
        store: Store,
        clock: Clock,
        *,
        checkpoint_seconds: float,
        metrics: AlertMetrics | None = None,
        on_fired: OnFired | None = None,
    ) -> None:
        self._alerts = alerts
        self._store = store
        self._clock = clock
        self._checkpoint_seconds = checkpoint_seconds
        self._metrics = metrics
        self._on_fired = on_fired
        self._rules: dict[int, Entry] = {}
        self._by_pair: dict[str, PairIndex] = {}
        self._pending: deque[Tick] = deque()
        self._resync = False
        self._wake = asyncio.Event()
        self._head = 0
        """The highest tick id the tick log has handed on."""
        self._cursor = 0
        """Every tick up to this id has been evaluated and what it changed committed."""
        self._dirty: set[int] = set()
        self._checkpoint_at = 0.0
        self._rewinds = 0
        """Counts rewinds: a step that saw one while it awaited must not move the cursor."""

    @property
    def cursor(self) -> int:
        """The highest tick id evaluated and committed."""
        return self._cursor

    @property
    def rule_count(self) -> int:
        """How many rules are loaded (cheap: for logs and metrics)."""
        return len(self._rules)

    def rules(self) -> list[Entry]:
        """The loaded rules (for tests), each state as of the latest tick.

        Brings every lagging ``last_tick_id`` up to date, so the next checkpoint saves
        those rules: not for a hot path.
        """
        self._catch_up(0)
        return list(self._rules.values())

    async def load(self, head: int) -> None:
        """Load every rule and refill windows; ``head``: the tick log's ``last_id``."""
        self._head = self._cursor = head
        loaded = await self._alerts.all()
        self._add_all(loaded)
        for stored in loaded:
            if not stored.state.done:
                self._rewind(stored.state.last_tick_id)
            if stored.rule.kind is Kind.PCT_MOVE and not stored.state.done:
                await self._warm(stored.rule, stored.state)
        self._checkpoint_at = self._clock.monotonic() + self._checkpoint_seconds

    async def _warm(self, rule: Rule, state: RuleState) -> None:
        # The window is derived data: the stored ticks it held, back to the last firing
        # (a firing restarts it).
        now_ms = round(self._clock.time() * 1000)
        since = max(now_ms - rule.window_s * 1000, state.last_fired_ms or 0)
        ticks = await self._store.between(rule.pair, since, now_ms + 1, WARM_LIMIT)
        state.window = Window(rule.window_s)
        for tick in ticks:
            if tick.id <= state.last_tick_id:
                state.window.add(tick.ts_ms, tick.price)

    # -- the tick log listener -----------------------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        """Queue one committed tick (the tick log's listener)."""
        self._head = max(self._head, tick.id)
        if not self._resync:
            if len(self._pending) >= MAX_PENDING:
                self._pending.clear()
                self._resync = True
            else:
                self._pending.append(tick)
        self._wake.set()

    # -- the worker ----------------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate and commit until cancelled."""
        while True:
            timeout = max(0.0, self._checkpoint_at - self._clock.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            await self.step()

    async def step(self) -> int:
        """Evaluate what is queued (or the next page of stored ticks) and commit it.

        Returns how many ticks were evaluated. Commits are retried until they succeed.
        """
        self._wake.clear()
        rewinds = self._rewinds
        if self._resync:
            ticks = await self._replay_page()
        else:
            ticks = list(self._pending)
            self._pending.clear()
        changes = self._evaluate(ticks)
        due = self._clock.monotonic() >= self._checkpoint_at
        if due:
            changes += self._checkpoints()
        if changes:
            await self._commit(changes)
        if due:
            self._checkpoint_at = self._clock.monotonic() + self._checkpoint_seconds
        if rewinds != self._rewinds:
            pass  # a rule came in while this step awaited: the resync reads from before it
        elif ticks:
            self._cursor = max(self._cursor, ticks[-1].id)
        elif not self._resync:
            self._cursor = max(self._cursor, self._head)
        if self._metrics is not None:
            self._metrics.lag.set(self._head - self._cursor)
        return len(ticks)

    async def _replay_page(self) -> list[Tick]:
        pairs = sorted(self._by_pair)
        self._pending.clear()
        self._resync = False
        if not pairs:
            return []
        try:
            ticks = await self._store.since_id(self._cursor, pairs, REPLAY_PAGE)
        except StoreError as exc:
            log.error("alerts cannot read stored ticks", reason=str(exc))
            self._resync = True
            await self._clock.sleep(RETRY_FIRST)
            self._wake.set()  # try again at once, not at the next tick or checkpoint
            return []
        if len(ticks) == REPLAY_PAGE:
            self._resync = True  # more to read: the next step goes on from here
            self._wake.set()
        return ticks

    def _evaluate(self, ticks: Iterable[Tick]) -> list[Commit]:
        changes: list[Commit] = []
        now_ms = round(self._clock.time() * 1000)
        for tick in ticks:
            index = self._by_pair.get(tick.pair)
            if index is None:
                continue
            for entry, firing in index.evaluate(tick):
                if firing is None:
                    self._dirty.add(entry.id)
                    continue
                self._dirty.discard(entry.id)
                state = entry.state.to_json()
                changes.append(Commit(entry.id, entry.version, state, firing, now_ms))
        return changes

    def _catch_up(self, every: int) -> None:
        # Rules the index did not visit saw the ticks all the same; only their
        # last_tick_id moved, which is saved now and then (see PairIndex.catch_up).
        for index in self._by_pair.values():
            self._dirty.update(entry.id for entry in index.catch_up(every))

    def _checkpoints(self) -> list[Commit]:
        self._catch_up(CATCH_UP_TICKS)
        now_ms = round(self._clock.time() * 1000)
        changes = [
            Commit(e.id, e.version, e.state.to_json(), None, now_ms)
            for ident in sorted(self._dirty)
            if (e := self._rules.get(ident)) is not None
        ]
        self._dirty.clear()
        return changes

    async def _commit(self, changes: list[Commit]) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                recorded = await self._alerts.commit(changes)
            except StoreError as exc:
                if self._metrics is not None:
                    self._metrics.commit_errors.inc()
                log.error("alerts cannot save firings", reason=str(exc), retry_in=delay)
                await self._clock.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            break
        for firing in recorded:
            entry = self._rules.get(firing.rule_id)
            if self._metrics is not None:
                self._metrics.firings.inc()
            if entry is not None and self._on_fired is not None:
                self._on_fired(entry.owner, firing)

    # -- rule changes (the REST layer) ---------------------------------------------------

    async def create(self, owner: str, rule: Rule, *, max_rules: int) -> StoredRule:
        """Save a new rule; it is evaluated on every tick after the latest one handed on."""
        start = self._head
        now_ms = round(self._clock.time() * 1000)
        stored = await self._alerts.create(
            owner, rule, last_tick_id=start, now_ms=now_ms, max_rules=max_rules
        )
        self._add(stored)
        # Ticks handed on while the insert awaited may already be evaluated without it.
        self._rewind(start)
        return stored

    async def replace(
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None
    ) -> StoredRule:
        """Replace a rule's definition; its state starts afresh after the latest tick."""
        start = self._head
        stored = await self._alerts.replace(
            owner, rule_id, rule, version=version, last_tick_id=start
        )
        self._drop(rule_id)
        self._add(stored)
        self._rewind(start)
        return stored

    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None:
        """Delete a rule, its firings and its undelivered outbox rows."""
        await self._alerts.delete(owner, rule_id, version=version)
        self._drop(rule_id)

    def refresh(self, rule_id: int, stored: StoredRule | None) -> None:
        """Take a rule change made elsewhere (another node of a cluster): ``stored`` is the
        rule as read after the change (``None``: deleted).

        A version this engine already has changes nothing (a change may be reported more
        than once, and its live state is newer than the stored one). Otherwise the rule
        is evaluated from its stored ``last_tick_id`` on, as after ``replace``.
        """
        current = self._rules.get(rule_id)
        if stored is not None and current is not None and current.version >= stored.version:
            return
        self._drop(rule_id)
        if stored is not None:
            self._add(stored)
            if not stored.state.done:
                self._rewind(stored.state.last_tick_id)

    def _add_all(self, rules: Iterable[StoredRule]) -> None:
        """``_add`` each rule (in order); the rules of a pair not indexed yet are indexed
        from their lowest ``last_tick_id``, so all the rules saved there (most, after a
        catch-up) are synced at once and the rest join as the replay reaches them. (One
        ``_add`` at a time would sync the first rule's id instead.) Rewinding is the
        caller's."""
        rules = list(rules)
        lowest: dict[str, int] = {}
        for stored in rules:
            if not stored.state.done and stored.rule.pair not in self._by_pair:
                pair, seen = stored.rule.pair, stored.state.last_tick_id
                lowest[pair] = min(lowest.get(pair, seen), seen)
        self._by_pair.update((pair, PairIndex(low)) for pair, low in lowest.items())
        for stored in rules:
            self._add(stored)

    def _add(self, stored: StoredRule) -> None:
        entry = Entry(stored.id, stored.owner, stored.rule, stored.state, stored.version)
        self._rules[entry.id] = entry
        index = self._by_pair.get(entry.rule.pair)
        if index is None:
            index = self._by_pair[entry.rule.pair] = PairIndex(entry.state.last_tick_id)
        index.add(entry)
        self._count()

    def _drop(self, rule_id: int) -> None:
        entry = self._rules.pop(rule_id, None)
        self._dirty.discard(rule_id)
        index = None if entry is None else self._by_pair.get(entry.rule.pair)
        if entry is not None and index is not None:
            index.remove(rule_id)
            if not index:
                del self._by_pair[entry.rule.pair]
        self._count()

    def _rewind(self, tick_id: int) -> None:
        self._rewinds += 1
        self._cursor = min(self._cursor, tick_id)
        self._resync = self._resync or self._cursor < self._head
        self._wake.set()

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.rules.set(len(self._rules))
