"""One daemon's membership in a cluster: the lease, the fenced sink, the follower, health.

``start()`` runs two tasks (three with Sentinel: one asks the sentinels every quarter
lease which server is primary, and reconnects when it moved). The *role* task renews or
acquires the lease every quarter lease and runs the *leader tasks* only while this daemon
leads: the fetch loop, and whatever else registered with ``lead()`` (the alert engine and
the webhook outbox); while it does not, the fetcher is told of each price
(``Fetcher.follow``) and of each turn (``Fetcher.following``), so stale/live, ``/readyz``
and the watchdog stay true.
The fetch loop's sink is ``publish``, which appends through the fenced script and never
touches SQLite. The *follower* task reads the log back and commits every entry through
``TickLog.apply``, whose listeners (the hub) broadcast it: the leader serves its own
prices the same way as every other daemon, so all of them send the same ids in the same
order.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from bittrade_feed.clock import Clock
from bittrade_feed.cluster.codec import draft_tick, encode
from bittrade_feed.cluster.connect import Connector
from bittrade_feed.cluster.errors import ClusterUnavailable, Fenced
from bittrade_feed.cluster.follower import Follower, LocalLog, Replica
from bittrade_feed.cluster.health import Health
from bittrade_feed.cluster.keys import Keys
from bittrade_feed.cluster.lease import Lease
from bittrade_feed.cluster.scripts import FENCED, Scripts, token_term
from bittrade_feed.config import Config
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.ops.metrics import ClusterMetrics, Metrics
from bittrade_feed.ops.supervise import Supervisor

log = structlog.get_logger("bittrade_feed.cluster")

EPOCH_GAP = 1000
"""A new epoch starts this far above the highest id the leader knows, so ids another daemon
read but the leader had not yet committed are never handed out again for another price
(this bounds how far the leader's replica may lag; it catches up in milliseconds)."""
MAX_BLOCK = 2.0
"""Longest blocking read, in seconds (shorter with short leases, so health stays fresh)."""
MAX_RESUME_WAIT = 2.0
"""Longest a resume point ahead of this daemon waits for its follower, in seconds."""


@dataclass(frozen=True, slots=True)
class LeaderTask:
    """A task that runs only while this daemon leads (see ``ClusterNode.lead``)."""

    name: str
    run: Callable[[], Awaitable[None]]
    restart: bool
    """Restart it when it crashes (``False``: a crash is fatal, as for the fetch loop)."""


def default_node_name() -> str:
    """Host name and process id: unique per daemon, readable in ``/api/cluster``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ClusterNode:
    """This daemon in the cluster (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        metrics: Metrics,
        ticklog: LocalLog,
        replica: Replica,
        fetcher: Fetcher,
        supervisor: Supervisor,
    ) -> None:
        c = config.cluster
        self.config = c
        self.name = c.node_name or default_node_name()
        self.clock = clock
        self.fetcher = fetcher
        self.supervisor = supervisor
        self.metrics = ClusterMetrics(metrics.registry)
        ttl = c.lease_ms / 1000
        self.period = ttl / 4
        block = min(MAX_BLOCK, ttl / 2)
        read_timeout = block + self.period + 0.5
        self.health = Health(
            poll_window=ttl * 0.75, read_window=block + read_timeout, lag_window=ttl
        )
        self.resume_wait = min(MAX_RESUME_WAIT, ttl)
        """How long a resume point above our newest id waits before ``resync ahead``: a
        follower behind for longer than a lease is not ready anyway (``Health.lag_window``)."""
        self.keys = Keys.for_prefix(c.feed_key)
        self.connector = Connector(c, self.period)
        self.redis = self.connector.client(timeout=self.period, name=f"bittrade-feed:{self.name}")
        self.reader = self.connector.client(
            timeout=read_timeout, name=f"bittrade-feed:{self.name}:log"
        )
        self.scripts = Scripts(self.redis, self.keys)
        self.lease = Lease(self.scripts, self.name, c.lease_ms, clock, self.metrics, self.health)
        self.follower = Follower(
            self.reader,
            self.keys,
            ticklog,
            replica,
            clock,
            self.metrics,
            self.health,
            block,
            self._applied,
        )
        # One role-loop turn: its sleep and a lease round trip that may first ask every
        # sentinel for the primary (each up to a period), twice over, plus a lease.
        self._turn_bound = 2 * self.period * (1 + len(c.sentinels)) + ttl
        self.highest = 0
        """The highest id this daemon has seen assigned (the floor of a new epoch)."""
        self.tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[LeaderTask] = []
        self._leading: dict[str, asyncio.Task[None]] = {}
        """The leader tasks running now, by name."""
        # Fatal when it crashes, as on a single daemon.
        self.lead("fetch-loop", self.fetcher.run, restart=False)

    def lead(self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool) -> None:
        """Run ``run()`` as task ``name`` whenever this daemon leads, and cancel it when not.

        It may be called before or after ``start()``: the role task starts what is
        registered at its next turn while leading. A task is cancelled the moment the
        lease is lost (or not renewed in time), so it must keep nothing it cannot find
        again when it runs next: fencing at Redis refuses what a deposed leader still sends.
        """
        self._leader_tasks.append(LeaderTask(name, run, restart))
        self.metrics.leader_tasks.labels(name).set(0)  # the series exists on every node

    def start(self, *, fetch: bool = True) -> None:
        """Start following and, when ``fetch``, competing for the lease (supervised tasks)."""
        self.fetcher.sink = self.publish
        # Both only keep state that survives a restart: the follower re-reads from the
        # replica's newest id, the role loop re-renews its lease.
        self.tasks = [
            self.supervisor.spawn("cluster-follower", self.follower.run, restart=True),
            self.supervisor.spawn("cluster-role", lambda: self._role(fetch), restart=True),
        ]
        if self.connector.sentinel is not None:
            # Its own task: sentinels that do not answer cost up to a timeout each, and
            # that must not delay the lease round trip (a leader would lose its lease).
            self.tasks.append(
                self.supervisor.spawn("cluster-sentinel", self._watch_primary, restart=True)
            )

    async def stop(self) -> None:
        """Stop fetching and following, give the lease back, close the connections."""
        # Cancel until they end: a cancellation that races redis-py's read timeout can come
        # back as a TimeoutError, which the loops treat as a Redis failure and retry (seen
        # once in about twenty runs of the test suite, as a hang at shutdown).
        pending = set(self.tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        await self._step_down()
        await self.lease.release()
        await self.redis.aclose()
        await self.reader.aclose()

    async def publish(self, draft: TickDraft) -> Tick:
        """The fetch loop's sink: append through the fenced script; Redis assigns the id."""
        token = self.lease.token
        if token is None:
            raise Fenced(f"{self.name} is not the cluster leader; the price was not published")
        known = max(self.highest, self.follower.position)
        started = time.perf_counter()
        try:
            seq, _epoch = await self.scripts.publish(
                token,
                known,
                EPOCH_GAP,
                self.config.stream_maxlen,
                secrets.token_hex(6),
                encode(draft),
            )
        except ResponseError as exc:
            self.metrics.redis_errors.labels("publish").inc()
            if str(exc).startswith(FENCED):
                self.metrics.fenced.inc()
                self.lease.lost()
                raise Fenced(f"Redis refused the publish: {exc}") from None
            raise ClusterUnavailable(f"Redis refused the publish: {exc}") from None
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("publish").inc()
            raise ClusterUnavailable(
                f"Redis did not take the publish: {type(exc).__name__}: {exc}"
            ) from None
        self.metrics.redis_duration.labels("publish").observe(time.perf_counter() - started)
        self.highest = max(self.highest, seq)
        return draft_tick(seq, draft)

    async def _watch_primary(self) -> None:
        while True:
            if await self.connector.primary_moved():
                log.warning("Sentinel names a new primary: reconnecting", node=self.name)
                await self.redis.connection_pool.disconnect()
                await self.reader.connection_pool.disconnect()
            await self.clock.sleep(self.period)

    async def _role(self, fetch: bool) -> None:
        while True:
            obs = await self.lease.poll() if fetch else None
            if not fetch:
                await self._observe()
            elif obs is not None:
                self.highest = max(self.highest, obs.last_id)
            leading = fetch and self.lease.leading()
            if leading:
                self._take_up()
            elif self._leading:
                log.warning("stepping down: leader tasks stopped", node=self.name)
                await self._step_down()
            if not leading:
                self.fetcher.following(
                    self._turn_bound, caught_up=self.health.ready(self.clock.monotonic())
                )
            self.metrics.ready.set(1 if self.health.ready(self.clock.monotonic()) else 0)
            await self.clock.sleep(self.period)

    async def _observe(self) -> None:
        """Without fetching, still look at the log head, so health sees a stuck follower."""
        try:
            obs = await self.scripts.lease(self.name, "", self.config.lease_ms, 0, acquire=False)
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("lease").inc()
            self.health.last_poll_error = str(exc)
            return
        self.health.poll_ok(self.clock.monotonic(), obs.last_id)

    def _applied(self, tick: Tick) -> None:
        # The leader's fetch loop already moved the pair on for its own publish.
        if not self.lease.leading():
            self.fetcher.follow(tick)

    def _take_up(self) -> None:
        """Start every leader task that is not running (all of them on a new lease)."""
        missing = [t for t in self._leader_tasks if t.name not in self._leading]
        if not missing:
            return
        if not self._leading:
            log.info(
                "leading: fetching",
                node=self.name,
                term=token_term(self.lease.leader),
                tasks=[t.name for t in missing],
            )
        for task in missing:
            self._leading[task.name] = self.supervisor.spawn(
                task.name, task.run, restart=task.restart
            )
            self.metrics.leader_tasks.labels(task.name).set(1)

    async def _step_down(self) -> None:
        """Cancel every leader task and wait for each to end."""
        running, self._leading = self._leading, {}
        for name, task in running.items():
            await self.supervisor.cancel(task)
            self.metrics.leader_tasks.labels(name).set(0)

    def checks(self) -> dict[str, dict[str, Any]]:
        """The cluster entries of ``/readyz``."""
        return self.health.checks(self.clock.monotonic())

    def to_json(self) -> dict[str, Any]:
        """The ``/api/cluster`` view of this daemon."""
        h = self.health
        now = self.clock.monotonic()
        last = self.lease.last
        return {
            "node": self.name,
            "leader": self.lease.leader or None,
            "is_leader": self.lease.leading(),
            "term": token_term(self.lease.leader),
            "epoch": self.follower.epoch or (last.epoch if last else None) or None,
            "position": self.follower.position,
            "head": h.head,
            "lag_ids": h.lag_ids,
            "holes": self.follower.holes,
            "epoch_changes": self.follower.epoch_changes,
            "fetching": "fetch-loop" in self._leading,
            "leader_tasks": sorted(self._leading),
            "ready": h.ready(now),
            "checks": h.checks(now),
            "lease_ms": self.config.lease_ms,
            "feed_key": self.config.feed_key,
        }
