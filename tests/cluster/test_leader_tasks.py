"""``ClusterNode.lead``: tasks that run only while the node leads (in-process, real Redis)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from tests.cluster.nodes import LEASE_MS, cluster_config, member, until
from tests.cluster.redisproc import RedisServer


def duty(running: Counter[str], name: str) -> Callable[[], Coroutine[Any, Any, None]]:
    """A leader task that counts itself in ``running`` until it is cancelled."""

    async def run() -> None:
        running[name] += 1
        try:
            await asyncio.Event().wait()
        finally:
            running[name] -= 1

    return run


async def test_leader_tasks_start_with_the_lease_and_stop_when_it_moves(
    redis_server: RedisServer, daemon_config
) -> None:
    """Registered after start, a task runs on the leader only, and moves with the lease."""
    running: Counter[str] = Counter()
    cfg_a = cluster_config(daemon_config, redis_server.url, "a")
    cfg_b = cluster_config(daemon_config, redis_server.url, "b")
    async with member(cfg_a) as a:
        await until(a.node.lease.leading, 5)
        a.node.lead("duty", duty(running, "a"), restart=True)
        await until(lambda: running["a"] == 1, 5)
        assert a.node.to_json()["leader_tasks"] == ["duty", "fetch-loop"]
        assert a.sample("bittrade_feed_cluster_leader_task", task="duty") == 1
        async with member(cfg_b) as b:
            b.node.lead("duty", duty(running, "b"), restart=True)
            await asyncio.sleep(LEASE_MS / 1000)
            assert running["b"] == 0 and b.node.to_json()["leader_tasks"] == []
            assert b.sample("bittrade_feed_cluster_leader_task", task="duty") == 0
            client = redis_server.client()
            while not b.node.lease.leading():
                # The lease expires under a (as if Redis's clock ran ahead) and b takes it.
                await client.delete(a.node.keys.leader)
                await b.node.lease.poll()
            await client.aclose()
            await until(lambda: running == Counter({"a": 0, "b": 1}), 5)
            assert a.node.to_json()["leader_tasks"] == []
            assert b.node.to_json()["leader_tasks"] == ["duty", "fetch-loop"]
            assert a.sample("bittrade_feed_cluster_leader_task", task="duty") == 0
        # b left: it stopped its task, and a takes the lease (and the task) back.
        await until(lambda: running == Counter({"a": 1, "b": 0}), 5)
    assert running == Counter({"a": 0, "b": 0})
