"""What only the Redis backend does: the fenced commit, the fan-out feeds, retention bounds,
and Redis failures as ``StoreError``s (real redis-server on a free loopback port)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bittrade_feed.alerts.redis import RedisAlertStore
from bittrade_feed.alerts.redis import rules as redis_rules
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.cluster.errors import ClusterUnavailable, Fenced
from bittrade_feed.cluster.keys import Keys
from bittrade_feed.errors import StoreError
from tests.alertbackends import PREFIX, Backend, change, open_backend, pending_ids

NEVER = 10**15
BASE = "{" + PREFIX + "}:alert"


@pytest.fixture
async def rb(tmp_path: Path) -> AsyncIterator[Backend]:
    async with open_backend("redis", tmp_path) as made:
        yield made


@pytest.fixture
async def short(tmp_path: Path) -> AsyncIterator[Backend]:
    """Redis keeping only 3 firings per rule."""
    async with open_backend("redis", tmp_path, history=3) as made:
        yield made


def store(b: Backend) -> RedisAlertStore:
    rules = b.stores.rules
    assert isinstance(rules, RedisAlertStore)
    return rules


def client(b: Backend) -> Redis:
    assert b.redis is not None
    return b.redis


async def snapshot(redis: Redis) -> dict[str, bytes]:
    """Every alert key's serialized value: equal snapshots mean nothing was written."""
    raw = Redis(port=redis.connection_pool.connection_kwargs["port"])
    try:
        return {str(k): await raw.dump(k) for k in sorted(await raw.keys(BASE + ":*"))}
    finally:
        await raw.aclose()


async def test_a_commit_with_a_stale_token_raises_fenced_and_writes_nothing(rb: Backend) -> None:
    hook = await rb.endpoint()
    stored = await rb.rule("alice", hook)
    await rb.rules.commit([change(stored, 1)])
    before = await snapshot(client(rb))
    # Another node took the lease (a new term): this node's token is stale.
    await client(rb).set(Keys.for_prefix(PREFIX).leader, "node-b:2")
    with pytest.raises(Fenced):
        await rb.rules.commit([change(stored, 2), change(stored, 3, fired=False)])
    assert await snapshot(client(rb)) == before
    # The lease expired and nobody holds it: still refused.
    await client(rb).delete(Keys.for_prefix(PREFIX).leader)
    with pytest.raises(Fenced):
        await rb.rules.commit([change(stored, 2)])
    assert await snapshot(client(rb)) == before
    # This node does not believe it leads: refused before asking Redis.
    rb.token[0] = None
    with pytest.raises(Fenced) as refused:
        await rb.rules.commit([change(stored, 2)])
    assert isinstance(refused.value, StoreError)
    got = await rb.rules.get("alice", stored.id)
    assert got is not None and got.state.last_tick_id == 1


async def test_rest_writes_are_not_fenced(rb: Backend) -> None:
    """Every node serves the API: a follower creates rules and test-fires them."""
    rb.token[0] = None
    await client(rb).delete(Keys.for_prefix(PREFIX).leader)
    stored = await rb.rule("alice")
    firing = await rb.rules.test_fire("alice", stored.id, {"test": True}, 5)
    assert await rb.rules.firings("alice", stored.id, 5) == [firing]


async def test_follow_fired_from_now_misses_nothing_between_calls(rb: Backend) -> None:
    feed, other = store(rb), rb.twin()
    stored = await rb.rule("alice")
    await rb.rules.commit([change(stored, 1)])  # before "now": not followed
    position, got = await feed.follow_fired("$", 10)
    assert got == [] and position != "$"
    (fired,) = await other.rules.commit([change(stored, 2)])
    tested = await other.rules.test_fire("alice", stored.id, {"test": True}, 7)
    position, got = await feed.follow_fired(position, 10)
    assert got == [("alice", fired), ("alice", tested)]
    same, nothing = await feed.follow_fired(position, 10)
    assert (same, nothing) == (position, [])


async def test_follow_fired_wakes_when_a_firing_is_committed(rb: Backend) -> None:
    feed = store(rb)
    reader = RedisAlertStore(client(rb), PREFIX, lambda: None, reader=client(rb))
    stored = await rb.rule("bob")
    position, _ = await reader.follow_fired("$", 1)
    waiting = asyncio.create_task(reader.follow_fired(position, 1500))
    await asyncio.sleep(0.05)
    (fired,) = await feed.commit([change(stored, 4)])
    _, got = await asyncio.wait_for(waiting, 2)
    assert got == [("bob", fired)]


async def test_follow_rule_changes_sees_every_node(rb: Backend) -> None:
    feed, other = store(rb), rb.twin()
    position, got = await feed.follow_rule_changes("$", 5)
    assert got == []
    made = await other.rules.create(
        "alice",
        parse_rule({"pair": "BTC-USD", "kind": "above", "level": "1"}),
        last_tick_id=0,
        now_ms=1,
        max_rules=5,
    )
    below = parse_rule({"pair": "BTC-USD", "kind": "below", "level": "1"})
    await other.rules.replace("alice", made.id, below, version=None, last_tick_id=0)
    kept = await rb.rule("bob")
    await other.rules.delete("alice", made.id, version=None)
    position, got = await feed.follow_rule_changes(position, 5)
    assert got == [made.id, made.id, kept.id, made.id]
    assert await feed.follow_rule_changes(position, 5) == (position, [])


async def test_a_rule_keeps_its_newest_firings_and_their_rows(short: Backend) -> None:
    hook = await short.endpoint()
    stored = await short.rule("alice", hook)
    fired = []
    for tick in range(1, 7):
        (f,) = await short.rules.commit([change(stored, tick)])
        fired.append(f)
        if tick != 2:  # the row of tick 2 is still being retried when it is trimmed
            due = [
                d for d in await short.outbox.due(NEVER, 10) if d.id.startswith(f"alert_{f.id}_")
            ]
            await short.outbox.finish(due[0].id, "failed" if tick % 2 else "delivered", "x")
    assert [f.id for f in await short.rules.firings("alice", stored.id, 10)] == [
        f.id for f in reversed(fired[-3:])
    ]
    assert await short.rules.firings_after("alice", 0, 10) == fired[-3:]
    # Failed rows of trimmed firings went with them; the pending one is still due.
    assert sorted(d.firing_id for d in await short.deliveries.failed("alice", 10)) == [fired[4].id]
    (late,) = await short.outbox.due(NEVER, 10)
    assert late.id == f"alert_{fired[1].id}_webhook_{hook.id}"
    await short.outbox.finish(late.id, "failed", "gave up")
    # Its firing is gone, so it goes too once it ends, rather than linger unlisted.
    assert [d.firing_id for d in await short.deliveries.failed("alice", 10)] == [fired[4].id]
    r = client(short)
    base = BASE
    assert await r.hlen(f"{base}:rule-ticks:{stored.id}") == 3
    assert await r.exists(f"{base}:row:{late.id}") == 0
    assert await r.scard(f"{base}:rule-rows:{stored.id}") == 3
    assert len(await r.keys(f"{base}:firing:*")) == 3
    # A trimmed tick is below the rule's saved state: a replay never evaluates it again.
    got = await short.rules.get("alice", stored.id)
    assert got is not None and got.state.last_tick_id == 6


async def test_the_fired_stream_is_bounded(rb: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_rules, "FIRED_MAXLEN", 10)
    stored = await rb.rule("alice")
    for start in range(0, 600, 50):
        await rb.rules.commit([change(stored, t) for t in range(start + 1, start + 51)])
    length = await client(rb).xlen(BASE + ":fired")
    assert length < 300  # MAXLEN ~ trims whole stream nodes (100 entries each)


async def test_redis_down_is_a_store_error(rb: Backend) -> None:
    stored = await rb.rule("alice")
    assert rb.server is not None
    await rb.server.stop()
    calls = [
        rb.rules.get("alice", stored.id),
        rb.rules.owned("alice"),
        rb.rules.commit([change(stored, 1)]),
        rb.rules.firings_after("alice", 0, 5),
        rb.endpoints.owned("alice"),
        rb.deliveries.failed("alice", 5),
        rb.outbox.due(NEVER, 5),
        rb.outbox.depth(),
        store(rb).follow_fired("$", 5),
    ]
    for pending in calls:
        with pytest.raises(ClusterUnavailable):
            await pending


async def test_the_pending_listing_matches_sqlite_order(rb: Backend) -> None:
    hooks = [await rb.endpoint(url=f"https://{i}.example.com/") for i in range(2)]
    a, b = await rb.rule("alice", *hooks), await rb.rule("alice", hooks[0])
    fired = await rb.rules.commit([change(b, 1), change(a, 1)])
    expected = sorted(
        (f.id, f"alert_{f.id}_webhook_{h.id}")
        for f in fired
        for h in (hooks if f.rule_id == a.id else hooks[:1])
    )
    assert pending_ids(await rb.rules.outbox()) == [row for _, row in expected]


async def test_a_lost_firing_counter_never_repeats_an_id_this_node_saw(rb: Backend) -> None:
    stored = await rb.rule("alice")
    fired = [f for t in (1, 2, 3) for f in await rb.rules.commit([change(stored, t)])]
    # A failover lost the last writes: the counter is back where it was two firings ago.
    await client(rb).set(BASE + ":ids:firing", fired[0].id)
    (after,) = await rb.rules.commit([change(stored, 4)])
    assert after.id == fired[-1].id + 1000
    test = await rb.rules.test_fire("alice", stored.id, {"test": True}, 5)
    assert test.id == after.id + 1
    # A node that only followed the firings knows the floor as well.
    other = rb.twin()
    assert isinstance(other.rules, RedisAlertStore)
    await other.rules.follow_fired("0-0", 5)
    await client(rb).delete(BASE + ":ids:firing")
    again = await other.rules.test_fire("alice", stored.id, {"test": True}, 6)
    assert again.id == test.id + 1000


async def test_a_lost_rule_counter_never_repeats_a_rule_id_this_node_saw(rb: Backend) -> None:
    made = [await rb.rule("alice") for _ in range(3)]
    await rb.rules.delete("alice", made[-1].id, version=None)
    await client(rb).delete(BASE + ":ids:rule")
    again = await rb.rule("alice")
    assert again.id == made[-1].id + 1000


@pytest.mark.parametrize("seed", range(3))
async def test_a_cancelled_caller_always_stops(rb: Backend, seed: int) -> None:
    """redis-py may answer a command after its task was cancelled: the stores re-raise the
    cancel, so a supervised worker being stopped stops (and shutdown never hangs)."""
    rng = random.Random(seed)
    stored = await rb.rule("alice")

    async def busy() -> None:
        while True:
            await rb.outbox.depth()
            await rb.rules.get("alice", stored.id)
            await rb.rules.test_fire("alice", stored.id, {"test": True}, 1)

    for _ in range(40):
        task = asyncio.create_task(busy())
        await asyncio.sleep(rng.uniform(0, 0.004))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done and task.cancelled()


async def test_a_due_entry_without_its_row_is_dropped_not_a_crash(rb: Backend) -> None:
    hook = await rb.endpoint()
    stored = await rb.rule("alice", hook)
    await rb.rules.commit([change(stored, 1), change(stored, 2)])
    first, second = await rb.outbox.due(NEVER, 10)
    await client(rb).delete(BASE + ":row:" + first.id)  # an operator removed it by hand
    assert [d.id for d in await rb.outbox.due(NEVER, 10)] == [second.id]
    assert await rb.outbox.depth() == 1


async def test_all_reads_every_rule_across_pages(
    rb: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_rules, "PAGE", 3)
    made = [await rb.rule(owner) for owner in ["alice", "bob"] * 4]
    await rb.rules.delete("alice", made[2].id, version=None)
    assert [r.id for r in await rb.rules.all()] == [r.id for r in made if r != made[2]]
