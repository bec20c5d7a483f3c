"""Leadership as a Redis lease with a fencing term: who may append to the shared log.

Acquire is ``INCR term`` + ``SET leader <node>:<term> PX ttl NX`` inside one script, renew
is compare-and-pexpire. Locally a holder stops fetching once it has not renewed for
``STEP_DOWN`` of the lease (its clock and Redis's may drift a little, and a paused process
cannot tell how long it slept); Redis itself refuses its publishes once the key changed.
"""

from __future__ import annotations

import time

import structlog
from redis.exceptions import RedisError

from bittrade_feed.clock import Clock
from bittrade_feed.cluster.health import Health
from bittrade_feed.cluster.scripts import Observation, Scripts, token_term
from bittrade_feed.ops.metrics import ClusterMetrics

log = structlog.get_logger("bittrade_feed.cluster")

STEP_DOWN = 0.6
"""Stop acting as leader after this fraction of the lease without a renewal."""


class Lease:
    """This daemon's view of the lease; ``poll()`` once per quarter lease."""

    def __init__(
        self,
        scripts: Scripts,
        node: str,
        lease_ms: int,
        clock: Clock,
        metrics: ClusterMetrics,
        health: Health,
    ) -> None:
        self.scripts, self.node, self.lease_ms = scripts, node, lease_ms
        self.clock, self.metrics, self.health = clock, metrics, health
        self.token: str | None = None
        """``<node>:<term>`` while we believe we hold the lease."""
        self.valid_until = 0.0
        self.leader = ""
        """The holder the last round trip saw."""
        self.term = 0
        self.last: Observation | None = None
        self._failing = False
        self._holder = ""
        """The last holder seen (an empty lease between two holders is not a change)."""

    def leading(self) -> bool:
        """Whether to act as leader now: we hold the lease and renewed it recently enough."""
        return self.token is not None and self.clock.monotonic() < self.valid_until

    async def poll(self) -> Observation | None:
        """Acquire, renew or observe; ``None`` if Redis did not answer."""
        sent = self.clock.monotonic()
        started = time.perf_counter()
        try:
            obs = await self.scripts.lease(
                self.node, self.token or "", self.lease_ms, self.term + 1
            )
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("lease").inc()
            self.health.last_poll_error = f"{type(exc).__name__}: {exc}"
            if not self._failing:
                self._failing = True
                log.warning("redis lease round trip failed", reason=self.health.last_poll_error)
            return None
        self.metrics.redis_duration.labels("lease").observe(time.perf_counter() - started)
        if self._failing:
            self._failing = False
            log.info("redis answers again")
        self.last = obs
        self.health.poll_ok(self.clock.monotonic(), obs.last_id)
        if obs.role:
            if obs.role == 1:
                log.info("lease acquired", node=self.node, token=obs.leader)
            self.token = obs.leader
            self.valid_until = sent + self.lease_ms / 1000 * STEP_DOWN
        elif self.token is not None:
            log.warning("lease lost", node=self.node, token=self.token, now_held_by=obs.leader)
            self.token = None
        if obs.leader and obs.leader != self._holder:
            if self._holder:
                self.metrics.leader_changes.inc()
            self._holder = obs.leader
        self.leader = obs.leader
        self.term = max(self.term, token_term(obs.leader))
        self.metrics.term.set(token_term(obs.leader))
        self.metrics.leader.set(1 if self.token else 0)
        return obs

    def lost(self) -> None:
        """Redis said we are not the holder (a fenced publish): stop at once."""
        if self.token is not None:
            log.warning("lease lost: publish fenced", node=self.node, token=self.token)
        self.token = None
        self.metrics.leader.set(0)

    async def release(self) -> None:
        """On shutdown, hand the lease back so another daemon takes over without waiting."""
        token, self.token = self.token, None
        if token is None:
            return
        try:
            await self.scripts.release(token)
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("release").inc()
            log.warning("could not release the lease; it expires by itself", reason=str(exc))
        self.metrics.leader.set(0)
