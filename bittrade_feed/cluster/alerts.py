"""Alerts in a cluster: the data in Redis, evaluation and delivery on the leader only.

Every node serves the alert API from Redis (``bittrade_feed.alerts.redis``), so a rule
created through any node is the same rule everywhere and a new leader finds the
undelivered webhooks where the old one left them.

- **The leader** runs two leader tasks (``ClusterNode.lead``), started when it takes the
  lease and cancelled when it loses it: ``alerts`` (a fresh ``AlertEngine`` that loads the
  rules from Redis, replays this node's stored ticks from the lowest saved
  ``last_tick_id``, and follows the rule-change feed so a rule changed through any node is
  evaluated from the tick after its creation point) and ``alerts-outbox`` (the webhook
  worker on the Redis outbox). Cancelling either loses nothing: outbox rows stay pending
  in Redis, and the engine's commit is fenced by the lease token, so a deposed leader
  that has not noticed yet cannot record a firing.
- **Every node**, the leader included, follows the ``fired`` stream and hands each firing
  to its hub (``Hub.publish_alert``): that is the only way alert events reach streams in a
  cluster, as the shared log is for prices. Resumes (``alerts_after``) read Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from bittrade_feed.alerts.backend import OutboxBackend
from bittrade_feed.alerts.engine import AlertEngine
from bittrade_feed.alerts.outbox import OutboxWorker
from bittrade_feed.alerts.redis import (
    RedisAlertStore,
    RedisDeliveries,
    RedisEndpointStore,
    RedisOutboxStore,
)
from bittrade_feed.alerts.redis.calls import call
from bittrade_feed.alerts.redis.keys import AlertKeys
from bittrade_feed.alerts.rules import Rule
from bittrade_feed.alerts.store import StoredRule
from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.clock import Clock
from bittrade_feed.cluster.lease import Lease
from bittrade_feed.cluster.node import ClusterNode
from bittrade_feed.errors import StoreError
from bittrade_feed.feed.ticklog import TickLog
from bittrade_feed.models import Tick
from bittrade_feed.ops.metrics import AlertMetrics
from bittrade_feed.ops.supervise import Supervisor
from bittrade_feed.store.sqlite import Store

log = structlog.get_logger("bittrade_feed.cluster.alerts")

RETRY_DELAY = 0.5
"""Seconds between reads of a feed after Redis failed to answer."""

WorkerFactory = Callable[[OutboxBackend], OutboxWorker]
T = TypeVar("T")


def lease_fence(lease: Lease) -> Callable[[], str | None]:
    """The alert commit's fence: this node's lease token while it may act as leader.

    Not only "do we hold a token": a leader that has not renewed in time writes nothing
    either (as it fetches nothing), and Redis refuses a token the lease no longer has.
    """
    return lambda: lease.token if lease.leading() else None


class RuleWriter:
    """The REST layer's rule changes in a cluster: straight to Redis, from any node.

    The leader's engine learns of them from the rule-change feed. A rule starts after the
    newest tick this node has handed on (as on one daemon); the leader may be a few ticks
    further, and evaluates those for the new rule when it reads the change.
    """

    def __init__(self, rules: RedisAlertStore, ticklog: TickLog, clock: Clock) -> None:
        self._rules, self._ticklog, self._clock = rules, ticklog, clock

    async def create(self, owner: str, rule: Rule, *, max_rules: int) -> StoredRule:
        """Save a new rule, evaluated from the tick after this node's newest."""
        now_ms = round(self._clock.time() * 1000)
        return await self._rules.create(
            owner, rule, last_tick_id=self._ticklog.last_id, now_ms=now_ms, max_rules=max_rules
        )

    async def replace(
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None
    ) -> StoredRule:
        """Replace a rule's definition; its state starts afresh after this node's newest tick."""
        return await self._rules.replace(
            owner, rule_id, rule, version=version, last_tick_id=self._ticklog.last_id
        )

    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None:
        """Delete a rule with its firings and undelivered webhooks."""
        await self._rules.delete(owner, rule_id, version=version)


class ClusterAlerts:
    """This node's part in the cluster's alerts (see the module docstring)."""

    def __init__(
        self,
        node: ClusterNode,
        ticklog: TickLog,
        store: Store,
        hub: Hub,
        clock: Clock,
        supervisor: Supervisor,
        metrics: AlertMetrics,
        worker: WorkerFactory,
        *,
        checkpoint_seconds: float,
    ) -> None:
        self.node, self.ticklog, self.store, self.hub = node, ticklog, store, hub
        self.clock, self.supervisor, self.metrics = clock, supervisor, metrics
        self.checkpoint_seconds = checkpoint_seconds
        prefix = node.config.feed_key
        # The node's clients: Sentinel reconnects move them too. Blocking reads go on the
        # reader, whose timeout is above the block (the lease client's is a quarter lease).
        self.rules = RedisAlertStore(
            node.redis, prefix, lease_fence(node.lease), reader=node.reader
        )
        self.endpoints = RedisEndpointStore(node.redis, prefix)
        self.deliveries = RedisDeliveries(node.redis, prefix)
        self.worker = worker(RedisOutboxStore(node.redis, prefix))
        self.writer = RuleWriter(self.rules, ticklog, clock)
        self._keys = AlertKeys.for_prefix(prefix)
        self._block_ms = node.follower.block_ms
        self.engine: AlertEngine | None = None
        """The leader's engine while the ``alerts`` leader task runs."""
        self._fired_at = "$"
        """The fan-out's position in the ``fired`` stream (kept across a task restart)."""
        self._fan_out_task: asyncio.Task[None] | None = None
        self._latest_known = False
        self._failing: dict[str, str] = {}

    async def start(self) -> None:
        """Serve resumes from Redis, fan firings out, and register the leader tasks."""
        self.hub.set_alert_source(self.rules.firings_after)
        # Pinned before the daemon serves, so a stream opened from now on misses no firing.
        # If Redis does not answer yet the fan-out starts from "$" when it does.
        await self._fan_out_once(1)
        self._fan_out_task = self.supervisor.spawn("alerts-fan-out", self._fan_out, restart=True)
        self.ticklog.add_listener(self._on_tick, name="alerts")
        self.node.lead("alerts", self._evaluate, restart=True)
        # Rows stay pending in Redis until an attempt ends: the next leader sends them.
        self.node.lead("alerts-outbox", self.worker.run, restart=True)

    async def stop(self) -> None:
        """Stop the fan-out (the leader tasks end with the node)."""
        if self._fan_out_task is not None:
            await self.supervisor.cancel(self._fan_out_task)
        self.hub.set_alert_source(None)

    # -- every node ------------------------------------------------------------------

    async def _fan_out(self) -> None:
        while True:
            if not await self._fan_out_once(self._block_ms):
                await self.clock.sleep(RETRY_DELAY)

    async def _fan_out_once(self, block_ms: int) -> bool:
        """One read of the ``fired`` stream, handed to the hub; ``False`` if Redis failed."""
        try:
            self._fired_at, fired = await self.rules.follow_fired(self._fired_at, block_ms)
        except StoreError as exc:
            self._fail("fan-out", str(exc))
            return False
        self._recovered("fan-out")
        if not self._latest_known:
            # Read after the position is pinned: a firing above the counter is appended
            # after it, so this node publishes it; streams may now be told their point.
            try:
                self.hub.alerts_known(await self.rules.latest_firing_id())
            except StoreError as exc:
                self._fail("fan-out", str(exc))
            else:
                self._latest_known = True
        for owner, firing in fired:
            self.hub.publish_alert(owner, firing)
        if fired:
            # A test firing made through any node: the leader's worker looks at once.
            self.worker.poke()
        return True

    def _on_tick(self, tick: Tick) -> None:
        if self.engine is not None:
            self.engine.on_tick(tick)

    # -- the leader ------------------------------------------------------------------

    async def _evaluate(self) -> None:
        """The ``alerts`` leader task: load the rules, evaluate, follow rule changes."""
        try:
            # The feed position is taken before the rules are read: a change made while
            # they load is read again from the feed (refresh ignores a version it has).
            position = await self._retry("rule changes", self._rule_feed_end)
            engine = await self._retry("alert rules", self._loaded_engine)
            log.info("alerts: evaluating on this node", rules=engine.rule_count)
            async with asyncio.TaskGroup() as group:
                group.create_task(engine.run())
                group.create_task(self._follow_rules(engine, position))
        finally:
            self.engine = None
            # Only the leader evaluates: elsewhere nothing is loaded and nothing lags.
            self.metrics.rules.set(0)
            self.metrics.lag.set(0)

    async def _loaded_engine(self) -> AlertEngine:
        """A fresh engine with every rule loaded (a failed load is retried with another)."""
        engine = AlertEngine(
            self.rules,
            self.store,
            self.clock,
            checkpoint_seconds=self.checkpoint_seconds,
            metrics=self.metrics,
            on_fired=lambda _owner, _firing: self.worker.poke(),
        )
        # Set before the first await: every tick handed on from the head it loads at is
        # queued for it (the replay covers those at or below, from each rule's own point).
        self.engine = engine
        await engine.load(self.ticklog.last_id)
        return engine

    async def _rule_feed_end(self) -> str:
        position, _ = await self.rules.follow_rule_changes("$", 1)
        return position

    async def _follow_rules(self, engine: AlertEngine, position: str) -> None:
        while True:
            try:
                after, ids = await self.rules.follow_rule_changes(position, self._block_ms)
                # Every changed rule is read before any is applied, and the position moves
                # only then: a read that fails is tried again from the same place.
                changed = [(i, await self._read_rule(i)) for i in dict.fromkeys(ids)]
            except StoreError as exc:
                self._fail("rule changes", str(exc))
                await self.clock.sleep(RETRY_DELAY)
                continue
            self._recovered("rule changes")
            for rule_id, stored in changed:
                engine.refresh(rule_id, stored)
            position = after

    async def _read_rule(self, rule_id: int) -> StoredRule | None:
        """A rule by id alone (the feed names no owner); ``None`` once deleted."""
        owner = await call(
            self.node.redis.hget(self._keys.rule(rule_id), "owner"), "cannot read alert rule"
        )
        return None if owner is None else await self.rules.get(str(owner), rule_id)

    async def _retry(self, what: str, read: Callable[[], Awaitable[T]]) -> T:
        """``read()`` until Redis answers: a leader waits out an outage, it does not crash."""
        while True:
            try:
                result = await read()
            except StoreError as exc:
                self._fail(what, str(exc))
                await self.clock.sleep(RETRY_DELAY)
                continue
            self._recovered(what)
            return result

    def _fail(self, what: str, reason: str) -> None:
        if self._failing.get(what) != reason:
            # Once per distinct cause, not once per retry.
            log.error("alerts: cannot read from Redis", feed=what, reason=reason)
            self._failing[what] = reason

    def _recovered(self, what: str) -> None:
        if self._failing.pop(what, None) is not None:
            log.info("alerts: reading from Redis again", feed=what)
