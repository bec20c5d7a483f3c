"""Concurrent requests on the alert data, on both backends, over many seeded schedules.

Two "nodes" (``Backend.twin()``: other connections to the same data) race: each request
waits a seeded random moment first, so every order of arrival is tried. Whatever the order,
the check and the write it guards happen together (a writer transaction in SQLite, one Lua
script in Redis).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from bittrade_feed.alerts.backend import Retry
from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import QuotaExceeded, VersionMismatch
from tests.alertbackends import Backend, backend, change

__all__ = ["backend"]

SEEDS = 25
NEVER = 10**15
T = TypeVar("T")


async def later(rng: random.Random, pending: Awaitable[T]) -> T:
    """``pending`` after a seeded pause: none (both start together, so their round trips
    overlap) or up to 1 ms (either goes first)."""
    await asyncio.sleep(rng.choice([0.0, rng.uniform(0, 0.001)]))
    return await pending


async def test_two_retries_of_one_failed_delivery_queue_it_once(backend: Backend) -> None:
    hook = await backend.endpoint()
    stored = await backend.rule("alice", hook, max_rules=SEEDS + 1)
    other = backend.twin()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        (firing,) = await backend.rules.commit([change(stored, seed + 1)])
        (due,) = await backend.outbox.due(NEVER, 10)
        await backend.outbox.finish(due.id, "failed", "boom")
        answers = await asyncio.gather(
            later(rng, backend.deliveries.retry("alice", due.id, 10)),
            later(rng, other.deliveries.retry("alice", due.id, 10)),
        )
        assert sorted(answers) == sorted([Retry.QUEUED, Retry.NOT_FAILED]), seed
        (queued,) = await backend.outbox.due(NEVER, 10)
        assert (queued.id, queued.attempts) == (f"alert_{firing.id}_webhook_{hook.id}", 0)
        assert await backend.outbox.depth() == 1
        await backend.outbox.finish(queued.id, "delivered", None)


async def test_creates_at_the_quota_from_two_nodes_keep_it(backend: Backend) -> None:
    other = backend.twin()
    rule = parse_rule({"pair": "BTC-USD", "kind": "above", "level": "1"})
    for seed in range(SEEDS):
        rng, owner, limit = random.Random(seed), f"owner{seed}", 1 + seed % 4
        for _ in range(limit - 1):
            await backend.rules.create(owner, rule, last_tick_id=0, now_ms=1, max_rules=limit)
        tries = [
            later(rng, node.rules.create(owner, rule, last_tick_id=0, now_ms=1, max_rules=limit))
            for node in (backend.stores, other) * 3
        ]
        answers = await asyncio.gather(*tries, return_exceptions=True)
        made = [a for a in answers if not isinstance(a, BaseException)]
        assert len(made) == 1, (seed, answers)
        assert all(isinstance(a, QuotaExceeded) for a in answers if a not in made)
        assert len(await backend.rules.owned(owner)) == limit


async def test_endpoint_creates_at_the_quota_from_two_nodes_keep_it(backend: Backend) -> None:
    other = backend.twin()
    for seed in range(SEEDS):
        rng, owner = random.Random(seed), f"owner{seed}"
        await backend.endpoints.create(owner, "https://a.example.com/", now_ms=1, limit=2)
        tries = [
            later(rng, node.endpoints.create(owner, "https://b.example.com/", now_ms=2, limit=2))
            for node in (backend.stores, other) * 2
        ]
        answers = await asyncio.gather(*tries, return_exceptions=True)
        assert sum(not isinstance(a, BaseException) for a in answers) == 1, (seed, answers)
        assert len(await backend.endpoints.owned(owner)) == 2


async def test_a_due_read_racing_rotations_sees_one_whole_endpoint(backend: Backend) -> None:
    other = backend.twin()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        hook = await backend.endpoints.create(
            f"o{seed}", "https://a.example.com/", now_ms=1, limit=5
        )
        stored = await backend.rule(f"o{seed}", hook)
        await backend.rules.commit([change(stored, 1)])
        jobs: list[Awaitable[object]] = []
        for i in range(3):
            jobs.append(
                later(rng, other.endpoints.rotate(f"o{seed}", hook.id, now_ms=i, overlap_ms=9))
            )
            jobs.append(later(rng, backend.outbox.due(NEVER, 10)))
        answers = await asyncio.gather(*jobs)
        rotated = [a for a in answers if isinstance(a, Endpoint)]
        seen = [d.endpoint for a in answers if isinstance(a, list) for d in a]
        assert len(rotated) == 3 and len(seen) == 3
        # Each read saw the endpoint as it was before or after some rotation, never a
        # secret of one and the old secret of another.
        assert all(e in [hook, *rotated] for e in seen), seed
        # The rotations ran one after another: each demoted the secret the one before made.
        chain, current = [], hook.secret
        for _ in rotated:
            (step,) = [r for r in rotated if r.old_secret == current]
            chain.append(step)
            current = step.secret
        after = chain[-1]
        assert await backend.endpoints.get(f"o{seed}", hook.id) == after
        (due,) = await backend.outbox.due(NEVER, 10)
        assert due.endpoint == after
        await backend.outbox.finish(due.id, "delivered", None)


async def test_a_commit_racing_a_rule_delete_leaves_nothing_of_the_rule(backend: Backend) -> None:
    hook = await backend.endpoint()
    other = backend.twin()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        stored = await backend.rule("alice", hook)
        await backend.rules.commit([change(stored, 1)])
        answers = await asyncio.gather(
            later(rng, backend.rules.commit([change(stored, 2), change(stored, 3)])),
            later(rng, other.rules.delete("alice", stored.id, version=None)),
            return_exceptions=True,
        )
        assert not any(isinstance(a, BaseException) for a in answers), answers
        assert await backend.rules.get("alice", stored.id) is None
        assert all(
            f.rule_id != stored.id for f in await backend.rules.firings_after("alice", 0, 99)
        )
        assert await backend.rules.outbox() == []
        assert await backend.outbox.due(NEVER, 10) == []


async def test_an_attempt_ending_while_its_rule_is_deleted_leaves_no_row(backend: Backend) -> None:
    hook = await backend.endpoint()
    other = backend.twin()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        stored = await backend.rule("alice", hook)
        await backend.rules.commit([change(stored, 1)])
        (due,) = await backend.outbox.due(NEVER, 10)
        outcome = rng.choice(["failed", "delivered"])
        await asyncio.gather(
            later(rng, backend.outbox.finish(due.id, outcome, "x")),
            later(rng, other.rules.delete("alice", stored.id, version=None)),
        )
        assert await backend.deliveries.failed("alice", 10) == []
        assert await backend.deliveries.retry("alice", due.id, 5) is Retry.NOT_FOUND
        assert await backend.outbox.depth() == 0


async def test_replaces_racing_on_one_version_let_one_win(backend: Backend) -> None:
    other = backend.twin()
    below = parse_rule({"pair": "BTC-USD", "kind": "below", "level": "2"})
    for seed in range(SEEDS):
        rng = random.Random(seed)
        stored = await backend.rule("alice", max_rules=SEEDS + 1)
        answers = await asyncio.gather(
            *(
                later(rng, n.rules.replace("alice", stored.id, below, version=1, last_tick_id=0))
                for n in (backend.stores, other, backend.stores)
            ),
            return_exceptions=True,
        )
        won = [a for a in answers if not isinstance(a, BaseException)]
        assert len(won) == 1, answers
        assert all(
            isinstance(a, VersionMismatch) and a.current == 2 for a in answers if a not in won
        )


@pytest.mark.parametrize("seed", range(3))
async def test_commits_from_two_writers_record_each_firing_once(
    backend: Backend, seed: int
) -> None:
    """A commit retried on another connection (a lost reply) records nothing twice."""
    rng = random.Random(seed)
    rules = [await backend.rule("alice") for _ in range(4)]
    other = backend.twin()
    ticks = list(range(1, 30))
    jobs = []
    for tick in ticks:
        batch = [change(r, tick) for r in rng.sample(rules, 2)]
        jobs += [
            later(rng, backend.rules.commit(batch)),
            later(rng, other.rules.commit(batch)),
        ]
    answers = await asyncio.gather(*jobs)
    recorded = [f for a in answers for f in a]
    stored = await backend.rules.firings_after("alice", 0, 1000)
    assert sorted(f.id for f in recorded) == [f.id for f in stored]
    keys = [(f.rule_id, f.tick_id) for f in stored]
    assert len(keys) == len(set(keys)) == len(ticks) * 2
