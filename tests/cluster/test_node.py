"""ClusterNode in-process against a real redis-server: lease, fencing, epochs, holes, health."""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal

import pytest

from bittrade_feed.cluster import Fenced
from bittrade_feed.models import TickDraft
from tests.cluster.nodes import LEASE_MS, cluster_config, member, until
from tests.cluster.redisproc import RedisServer
from tests.daemon import PAIR

DRAFT = TickDraft(PAIR, Decimal("70000.5"), 1_700_000_000_000, ("kraken", "bitfinex"))


def leaders(*members) -> list[str]:
    return [m.node.name for m in members if m.node.lease.leading()]


async def test_one_leader_fetches_and_every_node_commits_the_same_ticks(
    redis_server: RedisServer, daemon_config, fx
) -> None:
    """Three nodes: one fetches; all three commit the same ticks under the same ids, in order."""
    cfg = [cluster_config(daemon_config, redis_server.url, f"n{i}") for i in range(3)]
    async with member(cfg[0]) as a, member(cfg[1]) as b, member(cfg[2]) as c:
        await until(lambda: all(len(m.log.seen) >= 5 for m in (a, b, c)), 10)
        assert len(leaders(a, b, c)) == 1
    ids = [t.id for t in a.log.seen]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    shortest = min(len(m.log.seen) for m in (a, b, c))
    assert a.log.seen[:shortest] == b.log.seen[:shortest] == c.log.seen[:shortest]
    # Only the leader asked the exchanges: one request per source per published tick.
    published = max(len(m.log.seen) for m in (a, b, c))
    assert fx.requests["kraken"] == fx.requests["bitfinex"]
    assert published <= fx.requests["kraken"] <= published + 2


async def test_stale_leader_publish_is_fenced(redis_server: RedisServer, daemon_config) -> None:
    """A leader that stopped renewing (paused) cannot append once another node holds the lease."""
    cfg_a = cluster_config(daemon_config, redis_server.url, "a")
    cfg_b = cluster_config(daemon_config, redis_server.url, "b")
    async with member(cfg_a, fetch=False) as a:
        assert a.role is not None
        a.role.cancel()  # a observes only; drive its lease by hand
        await asyncio.gather(a.role, return_exceptions=True)
        obs = await a.node.lease.poll()
        assert obs is not None and obs.role == 1
        tick = await a.node.publish(DRAFT)
        # "Pause" a: no renewal; its key expires and b takes the lease under a higher term.
        await asyncio.sleep(LEASE_MS / 1000 + 0.1)
        async with member(cfg_b, fetch=True) as b:
            await until(b.node.lease.leading, 3)
            with pytest.raises(Fenced, match="FENCED"):
                await a.node.publish(DRAFT)
            assert a.sample("bittrade_feed_cluster_fenced_publishes_total") == 1
            assert not a.node.lease.leading()
            await until(lambda: len(b.log.seen) >= 2, 5)
        assert b.log.seen[0] == tick
        assert [t.id for t in b.log.seen] == list(range(tick.id, tick.id + len(b.log.seen)))
        assert b.node.lease.term > 1


async def test_redis_data_loss_starts_a_new_epoch_above_every_old_id(
    redis_server: RedisServer, daemon_config
) -> None:
    """SHUTDOWN NOSAVE and restart: a new epoch, ids above the old maximum, the gap a hole."""
    cfg = cluster_config(daemon_config, redis_server.url, "a")
    async with member(cfg) as a:
        await until(lambda: len(a.log.seen) >= 3, 5)
        old_max = a.log.seen[-1].id
        await redis_server.shutdown_nosave()
        await redis_server.start()
        await until(lambda: a.log.seen[-1].id > old_max, 10)
        new = [t for t in a.log.seen if t.id > old_max]
    assert a.sample("bittrade_feed_cluster_epoch_changes_total") == 1
    assert new[0].id > old_max + 1
    assert any(lo <= old_max + 1 and hi >= new[0].id - 1 for lo, hi in a.log.holes)
    assert a.log.history_floor >= new[0].id - 1


async def test_follower_far_behind_a_trimmed_log_records_a_hole(
    redis_server: RedisServer, daemon_config
) -> None:
    """A node whose next id was trimmed from Redis records the hole instead of skipping it."""
    cfg = cluster_config(daemon_config, redis_server.url, "a")
    async with member(cfg) as a:
        await until(lambda: len(a.log.seen) >= 6, 5)
        client = redis_server.client()
        await client.xtrim(a.node.keys.stream, maxlen=2, approximate=False)
        await client.aclose()
        cfg_b = cluster_config(daemon_config, redis_server.url, "b")
        async with member(cfg_b, fetch=False) as b:
            await until(lambda: len(b.log.seen) >= 2, 5)
    first = b.log.seen[0].id
    assert b.log.holes[0] == (1, first - 1)
    assert b.sample("bittrade_feed_cluster_holes_total") == 1
    assert all(a.log.ticks[t.id] == t for t in b.log.seen)


async def test_frozen_redis_makes_the_node_not_ready_then_recovers(
    redis_server: RedisServer, daemon_config
) -> None:
    """Redis SIGSTOPped: health fails within a lease, no id is invented, and it recovers."""
    cfg = cluster_config(daemon_config, redis_server.url, "a")
    async with member(cfg) as a:
        await until(lambda: a.node.health.ready(time.monotonic()) and len(a.log.seen) >= 2, 5)
        redis_server.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        await until(lambda: not a.node.health.ready(time.monotonic()), 5)
        assert time.monotonic() - stopped < LEASE_MS / 1000 * 2.5
        frozen_at = a.log.seen[-1].id
        await asyncio.sleep(1.0)
        assert a.log.seen[-1].id == frozen_at
        assert not a.node.lease.leading()
        redis_server.signal(signal.SIGCONT)
        await until(lambda: a.node.health.ready(time.monotonic()), 8)
        await until(lambda: a.log.seen[-1].id > frozen_at, 8)
    ids = [t.id for t in a.log.seen]
    assert ids == sorted(set(ids))
