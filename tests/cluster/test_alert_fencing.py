"""Seeded schedules of lease grabs, pauses and alert commits: a deposed leader records nothing.

Backs the README's "a deposed leader cannot record a firing": two in-process nodes on a
real redis-server commit firings through ``RedisAlertStore`` fenced by ``lease_fence``,
whenever they believe they lead, mostly on the newest tick and sometimes on one already
committed (a new leader replaying it). Pauses let the lease expire; a *steal* deletes the
leader key under a node that still believes it leads (clock drift, or a key lost), so
both the local check and the one inside Redis are exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from decimal import Decimal

import pytest

from bittrade_feed.alerts.redis import RedisAlertStore
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.cluster import Fenced
from bittrade_feed.cluster.alerts import lease_fence
from bittrade_feed.cluster.scripts import token_term
from tests.alertbackends import change
from tests.cluster.nodes import LEASE_MS, cluster_config, hand_driven
from tests.cluster.redisproc import RedisServer

STEPS = 40
RULE = parse_rule({"pair": "BTC-USD", "kind": "above", "level": "1"})


async def _pause(rng: random.Random) -> None:
    # Past the local step-down point (60 % of the lease), sometimes past the lease itself.
    await asyncio.sleep(LEASE_MS / 1000 * rng.uniform(0.65, 1.2))


@pytest.mark.parametrize("seed", range(6))
async def test_random_schedule_no_deposed_leader_commits_and_no_tick_fires_twice(
    seed: int, redis_server: RedisServer, daemon_config
) -> None:
    """Whatever the order: commits succeed only in non-decreasing term, one per tick."""
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        nodes = await hand_driven(
            stack, [cluster_config(daemon_config, redis_server.url, f"f{i}") for i in range(2)]
        )
        stores = [
            RedisAlertStore(m.node.redis, m.node.config.feed_key, lease_fence(m.node.lease))
            for m in nodes
        ]
        stored = await stores[0].create("local", RULE, last_tick_id=0, now_ms=1, max_rules=9)
        committed: list[tuple[int, int]] = []  # (term, tick) of each commit that was taken
        refused: list[str] = []
        tick = 0
        for _ in range(STEPS):
            action = rng.choices(["poll", "commit", "pause", "steal"], [4, 8, 1, 1])[0]
            believers = [i for i, m in enumerate(nodes) if m.node.lease.token is not None]
            i = rng.choice(believers) if believers and rng.random() < 0.8 else rng.randrange(2)
            lease = nodes[i].node.lease
            if action == "poll":
                await lease.poll()
            elif action == "commit":
                token = lease.token
                tick = tick + 1 if rng.random() < 0.7 or not committed else tick
                try:
                    got = await stores[i].commit([change(stored, tick)])
                except Fenced as exc:
                    refused.append("redis" if "FENCED" in str(exc) else "local")
                    continue
                assert token is not None, "a node without a token committed"
                committed += [(token_term(token), f.tick_id) for f in got]
            elif action == "pause":
                await _pause(rng)
            else:
                await nodes[i].node.redis.delete(nodes[i].node.keys.leader)
        firings = await stores[0].firings("local", stored.id, 1000)
    assert committed, "the schedule committed nothing: it tests nothing"
    assert refused, "no commit was refused: no deposed leader was exercised"
    terms = [term for term, _ in committed]
    assert terms == sorted(terms), f"a lower term committed after a higher one: {committed}"
    ticks = [f.tick_id for f in firings]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    assert sorted(ticks) == sorted(t for _, t in committed)
    assert all(f.payload["price"] == str(Decimal(2)) for f in firings)


async def test_a_leader_whose_key_was_taken_is_refused_inside_redis(
    redis_server: RedisServer, daemon_config
) -> None:
    """Still valid by its own clock, but another node holds the lease: Redis says FENCED."""
    configs = [cluster_config(daemon_config, redis_server.url, name) for name in ("a", "b")]
    async with contextlib.AsyncExitStack() as stack:
        a, b = await hand_driven(stack, configs)
        store_a = RedisAlertStore(a.node.redis, "bt", lease_fence(a.node.lease))
        stored = await store_a.create("local", RULE, last_tick_id=0, now_ms=1, max_rules=9)
        assert (await a.node.lease.poll()) is not None and a.node.lease.leading()
        assert len(await store_a.commit([change(stored, 1)])) == 1
        await a.node.redis.delete(a.node.keys.leader)  # expired early, as Redis sees it
        assert (await b.node.lease.poll()) is not None and b.node.lease.leading()
        assert a.node.lease.leading()  # a has not looked since
        with pytest.raises(Fenced, match="FENCED"):
            await store_a.commit([change(stored, 2)])
        assert [f.tick_id for f in await store_a.firings("local", stored.id, 10)] == [1]
