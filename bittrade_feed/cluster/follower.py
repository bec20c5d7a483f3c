"""The follower loop: read the shared log in order and commit each entry to the local replica.

Every daemon runs one, the leader included, on its own connection (a blocking ``XREAD``
must not delay the lease). ``XREAD`` from our newest id returns the next entries that
*exist*, so a first entry above ``position + 1`` means the ids between are gone from Redis
(trimmed, lost in a restart, or skipped by a new epoch): the range is recorded as a hole,
so a client resuming inside it gets ``resync``, never a silent gap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bittrade_feed.clock import Clock
from bittrade_feed.cluster.codec import BadEntry, decode
from bittrade_feed.cluster.health import Health
from bittrade_feed.cluster.keys import Keys
from bittrade_feed.cluster.scripts import entry_seq
from bittrade_feed.errors import StoreError
from bittrade_feed.models import Tick
from bittrade_feed.ops.metrics import ClusterMetrics

log = structlog.get_logger("bittrade_feed.cluster")

BATCH = 500
"""Entries per read while catching up."""
RETRY_DELAY = 0.25
"""Seconds between reads after a failure (Redis down, or a commit that failed)."""


class LocalLog(Protocol):
    """The tick log's replica side: commit a tick under an id assigned elsewhere."""

    async def apply(self, tick: Tick) -> bool: ...  # noqa: D102


class Replica(Protocol):
    """The store's side: where the replica stands and which ids it will never have."""

    async def max_id(self) -> int: ...  # noqa: D102
    async def record_hole(self, lo: int, hi: int) -> None: ...  # noqa: D102


class Follower:
    """Reads ``Keys.stream`` from the local newest id on, forever."""

    def __init__(
        self,
        reader: Redis,
        keys: Keys,
        ticklog: LocalLog,
        replica: Replica,
        clock: Clock,
        metrics: ClusterMetrics,
        health: Health,
        block_s: float,
        on_applied: Callable[[Tick], None],
    ) -> None:
        self.reader, self.keys, self.ticklog, self.replica = reader, keys, ticklog, replica
        self.clock, self.metrics, self.health = clock, metrics, health
        self.block_ms = max(1, round(block_s * 1000))
        self.on_applied = on_applied
        self.position = 0
        self.epoch: str | None = None
        self.holes = 0
        self.epoch_changes = 0
        self._failing = ""

    async def run(self) -> None:
        """Follow the log until cancelled."""
        self.position = await self.replica.max_id()
        self.health.applied(self.clock.monotonic(), self.position)
        while True:
            try:
                reply: Any = await self.reader.xread(
                    {self.keys.stream: f"{self.position}-0"}, count=BATCH, block=self.block_ms
                )
            except (RedisError, OSError) as exc:
                self.metrics.redis_errors.labels("read").inc()
                self._fail(f"{type(exc).__name__}: {exc}", read=True)
                await self.clock.sleep(RETRY_DELAY)
                continue
            self.health.last_read_ok = self.clock.monotonic()
            self.health.last_read_error = ""
            try:
                for entry_id, fields in _entries(reply):
                    await self._take(entry_seq(entry_id), fields)
            except StoreError as exc:
                # Nothing past the failed entry was taken: the next read starts there again.
                self._fail(str(exc), read=False)
                await self.clock.sleep(RETRY_DELAY)
                continue
            if self._failing:
                log.info("following the shared log again", position=self.position)
                self._failing = ""

    async def _take(self, seq: int, fields: Mapping[str, str]) -> None:
        if seq <= self.position:
            return
        try:
            tick, epoch = decode(seq, fields)
        except BadEntry as exc:
            log.error("unreadable entry in the shared log: treated as a hole", reason=str(exc))
            await self._hole(self.position + 1, seq)
            self.position = seq
            return
        if self.epoch is not None and epoch != self.epoch:
            self.epoch_changes += 1
            self.metrics.epoch_changes.inc()
            log.warning(
                "shared log epoch changed: Redis lost data; ids continue above the old ones",
                old=self.epoch,
                new=epoch,
                first_id=seq,
            )
        self.epoch = epoch
        if seq > self.position + 1:
            await self._hole(self.position + 1, seq - 1)
        await self.ticklog.apply(tick)
        self.position = seq
        now = self.clock.monotonic()
        self.health.applied(now, seq)
        self.metrics.applied.inc()
        self.metrics.lag_ids.set(self.health.lag_ids)
        self.metrics.lag_seconds.set(max(0.0, self.clock.time() - tick.ts_ms / 1000))
        self.on_applied(tick)

    async def _hole(self, lo: int, hi: int) -> None:
        await self.replica.record_hole(lo, hi)
        self.holes += 1
        self.metrics.holes.inc()
        log.warning("hole in the shared log: resumes into it get resync", lo=lo, hi=hi)

    def _fail(self, reason: str, *, read: bool) -> None:
        if read:
            self.health.last_read_error = reason
        else:
            self.health.apply_error = reason
        if reason != self._failing:
            # Once per distinct cause, not once per retry (four a second).
            log.error("shared log not followed", reason=reason, position=self.position)
            self._failing = reason


def _entries(reply: Any) -> list[tuple[str, Mapping[str, str]]]:
    """The entries of an ``XREAD`` reply (RESP2 list or RESP3 map, one stream)."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    out: list[tuple[str, Mapping[str, str]]] = []
    for _name, entries in streams:
        for entry in entries:
            out.append((str(entry[0]), entry[1]))
    return out
