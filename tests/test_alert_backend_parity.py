"""SQLite and Redis answer every seeded sequence of alert operations the same way.

Each step is one operation (rules, endpoints, commits, test firings, the worker's reads
and outcomes, retries, and every listing) applied to both backends; the answers must be
equal once the parts that are random by design are renamed in order of appearance
(endpoint ids and secrets). Listings that order by such an id (one firing's rows) are
compared as sorted lists.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bittrade_feed.alerts.backend import Due
from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import StoredFiring, StoredRule
from bittrade_feed.errors import StoreError
from tests.alertbackends import Backend, change, open_backend

STEPS = 80
OWNERS = ("alice", "bob")
NEVER = 10**15


class Names:
    """Renames one backend's random ids and secrets to E0, E1, ... / S0, S1, ..."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}

    def name(self, raw: str | None, prefix: str) -> str | None:
        if raw is None:
            return None
        if raw not in self.map:
            self.map[raw] = f"{prefix}{sum(v.startswith(prefix) for v in self.map.values())}"
        return self.map[raw]

    def row(self, row_id: str) -> str:
        head, _, endpoint = row_id.partition("_webhook_")
        return f"{head}_webhook_{self.name(endpoint, 'E')}"

    def endpoint(self, e: Endpoint | None) -> Any:
        if e is None:
            return None
        return (
            self.name(e.id, "E"),
            e.owner,
            e.url,
            self.name(e.secret, "S"),
            self.name(e.old_secret, "S"),
            e.old_until_ms,
            e.disabled_ms,
            e.created_ms,
        )

    def rule(self, r: StoredRule) -> Any:
        hooks = tuple(self.name(h, "E") for h in r.rule.webhooks)
        return (r.id, r.owner, r.rule.kind, r.rule.level, hooks, r.state.to_json(), r.version)

    def due(self, d: Due) -> Any:
        return (self.row(d.id), d.attempts, d.fired_ms, d.payload, self.endpoint(d.endpoint))


def firing(f: StoredFiring) -> Any:
    return (f.id, f.rule_id, f.tick_id, f.at_ms, f.payload)


class Node:
    """One backend, with what the sequence made there (in creation order)."""

    def __init__(self, backend: Backend) -> None:
        self.b = backend
        self.names = Names()
        self.rules: dict[int, StoredRule] = {}
        self.endpoints: list[Endpoint] = []
        self.rows: set[str] = set()
        """Every row id a ``due`` read returned (finished ones too: outcomes and retries
        of rows that are no longer pending are part of the behaviour)."""

    async def apply(self, op: tuple[Any, ...], clock: int) -> Any:
        """Run ``op``; its answer (or the error's type and details), renamed."""
        try:
            return await self._apply(op, clock)
        except StoreError as exc:
            return (type(exc).__name__, getattr(exc, "current", None), getattr(exc, "limit", None))

    async def _apply(self, op: tuple[Any, ...], clock: int) -> Any:
        kind, owner, pick, extra = op
        b, n = self.b, self.names
        mine = [e for e in self.endpoints if e.owner == owner]
        # A rule id of this sequence's (its ids are the same on both if all went alike).
        ids = sorted(self.rules)
        rule_id = ids[pick % len(ids)] if ids and pick else pick + 1000
        rule = self.rules.get(rule_id)
        if kind == "create_rule":
            hooks = [e.id for e in mine][: extra % 4]
            body = {"pair": "BTC-USD", "kind": "above", "level": str(1 + extra % 3)}
            made = await b.rules.create(
                owner,
                parse_rule({**body, "webhooks": hooks}),
                last_tick_id=0,
                now_ms=clock,
                max_rules=4,
            )
            self.rules[made.id] = made
            return n.rule(made)
        if kind == "replace":
            version = None if extra % 3 == 0 else extra % 3
            below = parse_rule({"pair": "BTC-USD", "kind": "below", "level": str(extra + 1)})
            made = await b.rules.replace(owner, rule_id, below, version=version, last_tick_id=clock)
            self.rules[made.id] = made
            return n.rule(made)
        if kind == "delete":
            await b.rules.delete(owner, rule_id, version=None if extra % 2 else 1)
            self.rules.pop(rule_id, None)
            return "deleted"
        if kind == "create_endpoint":
            made_e = await b.endpoints.create(
                owner, f"https://{extra}.example/", now_ms=clock, limit=3
            )
            self.endpoints.append(made_e)
            return n.endpoint(made_e)
        if kind == "delete_endpoint":
            return await b.endpoints.delete(owner, mine[pick % len(mine)].id) if mine else None
        if kind == "rotate":
            if not mine:
                return None
            got = await b.endpoints.rotate(
                owner, mine[pick % len(mine)].id, now_ms=clock, overlap_ms=5
            )
            return n.endpoint(got)
        if kind == "commit":
            if rule is None:
                return None
            tick = clock if extra % 3 else extra  # new ticks, and now and then an old one
            fired = await b.rules.commit([change(rule, tick, fired=extra % 4 != 0, at_ms=clock)])
            return [firing(f) for f in fired]
        if kind == "test_fire":
            return firing(await b.rules.test_fire(owner, rule_id, {"test": True}, clock))
        if kind == "due":
            due = await b.outbox.due(clock if extra % 2 else NEVER, 100)
            self.rows |= {d.id for d in due}
            return sorted(map(str, (n.due(d) for d in due)))
        if kind in ("reschedule", "finish", "disable", "retry"):
            if not self.rows:
                return None
            row = sorted(self.rows, key=n.row)[pick % len(self.rows)]
            if kind == "reschedule":
                await b.outbox.reschedule(row, clock + extra, f"HTTP {extra}")
            elif kind == "finish":
                error = None if extra % 3 == 0 else f"e{extra}"
                await b.outbox.finish(row, "delivered" if extra % 2 else "failed", error)
            elif kind == "disable":
                await b.outbox.disable(row, row.partition("_webhook_")[2], clock)
            else:
                return str(await b.deliveries.retry(owner, row, clock))
            return kind
        return await self._read(kind, owner, rule_id if kind == "firings" else pick)

    async def _read(self, kind: str, owner: str, pick: Any) -> Any:
        b, n = self.b, self.names
        if kind == "owned":
            return [n.rule(r) for r in await b.rules.owned(owner)]
        if kind == "all":
            return [n.rule(r) for r in await b.rules.all()]
        if kind == "firings":
            return [firing(f) for f in await b.rules.firings(owner, pick, 5)]
        if kind == "firings_after":
            return [firing(f) for f in await b.rules.firings_after(owner, pick, 3)]
        if kind == "failed":
            got = await b.deliveries.failed(owner, 100)
            return sorted(
                str(
                    (
                        n.row(f.id),
                        f.rule_id,
                        f.firing_id,
                        n.name(f.endpoint_id, "E"),
                        f.attempts,
                        f.last_error,
                    )
                )
                for f in got
            )
        if kind == "endpoints":
            return [n.endpoint(e) for e in await b.endpoints.owned(owner)]
        if kind == "outbox":
            return sorted((n.row(i), f, c, s) for i, f, c, s in await b.rules.outbox())
        assert kind == "depth"
        return (await b.outbox.depth(), await b.outbox.nearest_due_ms())


KINDS = (
    ["create_rule"] * 4
    + ["create_endpoint"] * 4
    + ["commit"] * 8
    + ["due"] * 6
    + ["finish"] * 3
    + ["reschedule"] * 2
    + ["retry"] * 3
    + ["disable"]
    + ["replace", "delete", "delete_endpoint", "rotate", "test_fire"]
    + ["owned", "all", "firings", "firings_after", "failed", "endpoints", "outbox", "depth"]
)


def script(seed: int) -> list[tuple[Any, ...]]:
    """A seeded sequence of operations: (kind, owner, pick, extra)."""
    rng = random.Random(seed)
    # Each owner starts with two endpoints and two rules naming them, so the outbox fills.
    first = [("create_endpoint", 1), ("create_endpoint", 2), ("create_rule", 2), ("create_rule", 3)]
    start = [(kind, owner, 0, extra) for owner in OWNERS for kind, extra in first]
    return start + [
        (rng.choice(KINDS), rng.choice(OWNERS), rng.randint(0, 6), rng.randint(0, 12))
        for _ in range(STEPS)
    ]


@pytest.mark.parametrize("seed", range(30))
async def test_both_backends_answer_every_sequence_alike(seed: int, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    async with (
        open_backend("sqlite", tmp_path / "s") as sqlite,
        open_backend("redis", tmp_path / "r") as redis,
    ):
        nodes = [Node(sqlite), Node(redis)]
        for step, op in enumerate(script(seed)):
            clock = 1_000 + step * 10
            answers = [await node.apply(op, clock) for node in nodes]
            assert answers[0] == answers[1], (seed, step, op)
