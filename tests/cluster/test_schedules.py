"""Seeded random schedules of lease grabs, pauses, publishes and Redis data loss.

Backs the README's "one id never carries two prices, on any node": three nodes race for
the lease with pauses longer than it, publish whenever they believe they lead, and Redis
loses everything now and then. Every node's replica must agree on every id, and no price
published by a node Redis refused may appear anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from decimal import Decimal

import pytest

from bittrade_feed.cluster import ClusterUnavailable, Fenced
from bittrade_feed.models import TickDraft
from tests.cluster.nodes import LEASE_MS, cluster_config, member, until
from tests.cluster.redisproc import RedisServer
from tests.daemon import PAIR

STEPS = 30


@pytest.mark.parametrize("seed", range(4))
async def test_random_schedule_never_gives_one_id_two_prices(
    seed: int, redis_server: RedisServer, daemon_config
) -> None:
    """Whatever the order of grabs, pauses and losses: one payload per id on every node."""
    rng = random.Random(seed)
    configs = [cluster_config(daemon_config, redis_server.url, f"s{i}") for i in range(3)]
    published: dict[Decimal, int] = {}
    refused: set[Decimal] = set()
    price = Decimal(60000)
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(member(c, fetch=False)) for c in configs]
        for _ in range(STEPS):
            action = rng.choices(["poll", "publish", "pause", "lose"], [5, 8, 1, 0.6])[0]
            # Mostly a node that believes it leads (maybe wrongly, after a pause), else any.
            believers = [m.node for m in nodes if m.node.lease.token is not None]
            if believers and rng.random() < 0.75:
                who = rng.choice(believers)
            else:
                who = rng.choice(nodes).node
            if action == "poll":
                await who.lease.poll()
            elif action == "publish":
                price += 1
                draft = TickDraft(PAIR, price, 1_700_000_000_000, ("kraken", "bitfinex"))
                try:
                    tick = await who.publish(draft)
                except (Fenced, ClusterUnavailable):
                    refused.add(price)
                else:
                    published[price] = tick.id
            elif action == "pause":
                # Nobody renews for longer than the lease: the next poll elects anew.
                await asyncio.sleep(LEASE_MS / 1000 * rng.uniform(0.5, 1.3))
            else:
                await redis_server.shutdown_nosave()
                await redis_server.start()
        head = max(published.values(), default=0)
        await until(lambda: all(m.node.follower.position >= head for m in nodes), 10)
    assert published, "the schedule published nothing: it tests nothing"
    by_id: dict[int, object] = {}
    for m in nodes:
        assert not m.node.health.apply_error
        for ident, tick in m.log.ticks.items():
            assert by_id.setdefault(ident, tick) == tick, f"id {ident}: two prices"
            assert tick.price not in refused, f"refused price {tick.price} appeared as {ident}"
            assert published.get(tick.price, ident) == ident
        ids = [t.id for t in m.log.seen]
        assert ids == sorted(ids)
