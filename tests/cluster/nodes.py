"""Cluster nodes in the test process: real Redis, fake exchanges, in-memory replicas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bittrade_feed.clock import SystemClock
from bittrade_feed.cluster import ClusterNode
from bittrade_feed.config import Config
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import FeedStatus
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.ops.supervise import Supervisor
from tests.cluster.standin import MemoryLog

LEASE_MS = 1000
INTERVAL = 0.2


@dataclass
class Member:
    """One node and what it committed and said."""

    node: ClusterNode
    log: MemoryLog
    metrics: Metrics
    statuses: list[FeedStatus] = field(default_factory=list)
    role: asyncio.Task[None] | None = None

    def sample(self, name: str, **labels: str) -> float:
        """A metric value (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def cluster_config(build: Callable[..., Config], url: str, name: str, **cluster: Any) -> Config:
    """A daemon config joined to the Redis at ``url`` under ``name``."""
    return build(
        feed={"interval": INTERVAL, "request_timeout": 0.1},
        cluster={"redis_url": url, "node_name": name, "lease_ms": LEASE_MS, **cluster},
    )


@contextlib.asynccontextmanager
async def member(config: Config, *, fetch: bool = True) -> AsyncIterator[Member]:
    """A started node; stopped (lease released) when the block ends."""
    metrics = Metrics(new_registry())
    log = MemoryLog()
    async with aiohttp.ClientSession() as session:
        statuses: list[FeedStatus] = []
        clock = SystemClock()
        fetcher = Fetcher(config, session, clock, metrics, _no_sink, statuses.append)
        supervisor = Supervisor(metrics.task_crashes, clock.sleep, clock.monotonic)
        node = ClusterNode(config, clock, metrics, log, log, fetcher, supervisor)
        m = Member(node, log, metrics, statuses)
        node.start(fetch=fetch)
        m.role = node.tasks[1]
        try:
            yield m
        finally:
            # Bounded, so a stop that hangs fails the test with a traceback instead.
            async with asyncio.timeout(10):
                await node.stop()
                await supervisor.stop()
            assert supervisor.failed is None, supervisor.failed


async def hand_driven(stack: contextlib.AsyncExitStack, configs: list[Config]) -> list[Member]:
    """Started nodes whose role tasks are stopped: the test drives every lease round trip."""
    members = [await stack.enter_async_context(member(c, fetch=False)) for c in configs]
    for m in members:
        assert m.role is not None
        m.role.cancel()
        await asyncio.gather(m.role, return_exceptions=True)
    return members


async def _no_sink(draft: object) -> Any:
    raise AssertionError("ClusterNode.start replaces the sink")


async def until(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` until it holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
