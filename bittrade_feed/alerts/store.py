"""The alert tables: rules, their firings and the delivery outbox, through the price store.

Every write is one ``Store.transact`` call, so it runs on the store's single writer lane:
it never interleaves with a tick's transaction, and it runs to COMMIT or ROLLBACK even if
its caller gives up. A firing, its rule's new state and its outbox rows are one such
transaction (``commit``): after a crash either all of them are there or none is, and
the engine's replay of the stored ticks makes the missing ones again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bittrade_feed.alerts.rules import Firing, Rule, RuleState
from bittrade_feed.alerts.spec import Stored, from_stored, to_stored
from bittrade_feed.errors import StoreRejected
from bittrade_feed.models import format_ts
from bittrade_feed.store.sqlite import Store

RULE_COLUMNS = (
    "id, owner, pair, kind, params, frequency, state, last_tick_id, version, created_ms, expires_ms"
)
FIRING_COLUMNS = "id, rule_id, tick_id, at_ms, payload"


class QuotaExceeded(StoreRejected):
    """The owner already has as many rules (or endpoints) as the config's ``key`` allows."""

    def __init__(
        self, owner: str, limit: int, what: str = "rules", key: str = "alerts.max_rules_per_owner"
    ) -> None:
        super().__init__(f"{owner} already has {limit} {what} ({key})")
        self.limit = limit


class VersionMismatch(StoreRejected):
    """The rule changed (or went) since the version the caller named."""

    def __init__(self, rule_id: int, current: int | None) -> None:
        what = "no longer exists" if current is None else f"is at version {current}"
        super().__init__(f"rule {rule_id} {what}")
        self.current = current


@dataclass(frozen=True, slots=True)
class StoredRule:
    """One row of ``alert_rules``."""

    id: int
    owner: str
    rule: Rule
    state: RuleState
    version: int
    created_ms: int

    @property
    def etag(self) -> str:
        """The HTTP entity tag of this version of the rule (quoted, strong)."""
        return f'"{self.id}-{self.version}"'


@dataclass(frozen=True, slots=True)
class StoredFiring:
    """One row of ``alert_firings``."""

    id: int
    rule_id: int
    tick_id: int | None
    at_ms: int
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The firing as the API lists it and as a stream's ``alert`` event carries it."""
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "tick_id": self.tick_id,
            "at": format_ts(self.at_ms),
            "data": self.payload,
        }


@dataclass(frozen=True, slots=True)
class Commit:
    """What one evaluation changed for one rule: its new state, and a firing if it fired."""

    rule_id: int
    version: int
    """The rule version it was evaluated under: an edit in between makes it moot."""
    state: dict[str, Any]
    firing: Firing | None
    at_ms: int


def outbox_id(firing_id: int, channel: str, endpoint_id: str | None = None) -> str:
    """The idempotency id of one delivery: the same on every attempt, and after a restart."""
    tail = f"_{endpoint_id}" if endpoint_id else ""
    return f"alert_{firing_id}_{channel}{tail}"


def rule_row(row: Sequence[Any]) -> StoredRule:
    """A ``StoredRule`` from the ``RULE_COLUMNS`` of a row (a Redis rule hash too)."""
    ident, owner, pair, kind, params, frequency, state, last_id, version, created, expires = row
    until = None if expires is None else int(expires)
    rule = from_stored(Stored(pair, kind, json.loads(params), json.loads(frequency), until))
    restored = RuleState.from_json(json.loads(state))
    restored.last_tick_id = int(last_id)
    return StoredRule(int(ident), str(owner), rule, restored, int(version), int(created))


def firing_row(row: Sequence[Any]) -> StoredFiring:
    """A ``StoredFiring`` from the ``FIRING_COLUMNS`` of a row (a Redis firing hash too)."""
    ident, rule_id, tick_id, at_ms, payload = row
    tick = None if tick_id is None else int(tick_id)
    return StoredFiring(int(ident), int(rule_id), tick, int(at_ms), json.loads(payload))


def definition(stored: Stored, state: RuleState, last_tick_id: int) -> tuple[Any, ...]:
    """The values of the columns a create writes and a replace rewrites, in the order both
    statements name them: pair, kind, params, frequency, state, last_tick_id, expires_ms."""
    return (
        stored.pair,
        stored.kind,
        dump(stored.params),
        dump(stored.frequency),
        dump(state.to_json()),
        last_tick_id,
        stored.expires_ms,
    )


def dump(value: object) -> str:
    """Compact, key-sorted JSON: how both backends store states, params and payloads."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class AlertStore:
    """Reads and writes the alert tables of an open ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(
        self, owner: str, rule: Rule, *, last_tick_id: int, now_ms: int, max_rules: int
    ) -> StoredRule:
        """Insert a rule that starts after tick ``last_tick_id``; ``QuotaExceeded`` if full."""
        stored, state = to_stored(rule), RuleState(last_tick_id=last_tick_id)

        async def body(conn: aiosqlite.Connection) -> StoredRule:
            # Counted inside the writer's transaction: two concurrent creates cannot both
            # pass a check made before either inserted.
            (row,) = await conn.execute_fetchall(
                "SELECT COUNT(*) FROM alert_rules WHERE owner = ?", (owner,)
            )
            if int(row[0]) >= max_rules:
                raise QuotaExceeded(owner, max_rules)
            cursor = await conn.execute(
                "INSERT INTO alert_rules (owner, created_ms, version, pair, kind, params, "
                "frequency, state, last_tick_id, expires_ms) VALUES (?,?,1,?,?,?,?,?,?,?)",
                (owner, now_ms, *definition(stored, state, last_tick_id)),
            )
            ident = cursor.lastrowid
            await cursor.close()
            assert ident is not None
            return StoredRule(ident, owner, rule, state, 1, now_ms)

        return await self._store.transact(body, "cannot create alert rule")

    async def replace(
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None, last_tick_id: int
    ) -> StoredRule:
        """Replace a rule's definition (a fresh state from ``last_tick_id``) if at ``version``.

        ``version=None`` replaces whatever version is stored. ``VersionMismatch`` if the
        rule is at another version or is not the owner's.
        """
        stored, state = to_stored(rule), RuleState(last_tick_id=last_tick_id)

        async def body(conn: aiosqlite.Connection) -> StoredRule:
            current = await self._current(conn, owner, rule_id)
            if current is None or (version is not None and current.version != version):
                raise VersionMismatch(rule_id, None if current is None else current.version)
            await conn.execute_fetchall(
                "UPDATE alert_rules SET pair = ?, kind = ?, params = ?, frequency = ?, "
                "state = ?, last_tick_id = ?, expires_ms = ?, version = version + 1 "
                "WHERE id = ?",
                (*definition(stored, state, last_tick_id), rule_id),
            )
            return StoredRule(rule_id, owner, rule, state, current.version + 1, current.created_ms)

        return await self._store.transact(body, f"cannot update alert rule {rule_id}")

    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None:
        """Delete a rule with its firings and undelivered outbox rows."""

        async def body(conn: aiosqlite.Connection) -> None:
            current = await self._current(conn, owner, rule_id)
            if current is None or (version is not None and current.version != version):
                raise VersionMismatch(rule_id, None if current is None else current.version)
            await conn.execute_fetchall(
                "DELETE FROM alert_outbox WHERE firing_id IN "
                "(SELECT id FROM alert_firings WHERE rule_id = ?)",
                (rule_id,),
            )
            await conn.execute_fetchall("DELETE FROM alert_firings WHERE rule_id = ?", (rule_id,))
            await conn.execute_fetchall("DELETE FROM alert_rules WHERE id = ?", (rule_id,))

        await self._store.transact(body, f"cannot delete alert rule {rule_id}")

    async def commit(self, changes: Sequence[Commit]) -> list[StoredFiring]:
        """Save states, firings and their outbox rows, all in one transaction.

        A change for a rule edited or deleted since it was evaluated is skipped (it
        describes a rule that no longer exists); a firing already recorded for the same
        (rule, tick) is not recorded again. Returns the firings this call recorded.
        """

        async def body(conn: aiosqlite.Connection) -> list[StoredFiring]:
            recorded: list[StoredFiring] = []
            for change in changes:
                cursor = await conn.execute(
                    "UPDATE alert_rules SET state = ?, last_tick_id = MAX(last_tick_id, ?) "
                    "WHERE id = ? AND version = ?",
                    (
                        dump(change.state),
                        int(change.state["last_tick_id"]),
                        change.rule_id,
                        change.version,
                    ),
                )
                updated = cursor.rowcount
                await cursor.close()
                if updated != 1 or change.firing is None:
                    continue
                firing = await self._record(conn, change.rule_id, change.firing, change.at_ms)
                if firing is not None:
                    recorded.append(firing)
            return recorded

        return await self._store.transact(body, "cannot record alert firings")

    async def test_fire(
        self, owner: str, rule_id: int, payload: dict[str, Any], now_ms: int
    ) -> StoredFiring:
        """Record a firing that no tick caused (``tick_id`` NULL), with its outbox row."""

        async def body(conn: aiosqlite.Connection) -> StoredFiring:
            if await self._current(conn, owner, rule_id) is None:
                raise VersionMismatch(rule_id, None)
            return await self._insert_firing(conn, rule_id, None, payload, now_ms)

        return await self._store.transact(body, f"cannot test-fire alert rule {rule_id}")

    async def _record(
        self, conn: aiosqlite.Connection, rule_id: int, firing: Firing, at_ms: int
    ) -> StoredFiring | None:
        found = await conn.execute_fetchall(
            "SELECT 1 FROM alert_firings WHERE rule_id = ? AND tick_id = ?",
            (rule_id, firing.tick_id),
        )
        if found:
            return None
        return await self._insert_firing(conn, rule_id, firing.tick_id, firing.to_json(), at_ms)

    async def _insert_firing(
        self,
        conn: aiosqlite.Connection,
        rule_id: int,
        tick_id: int | None,
        payload: dict[str, Any],
        at_ms: int,
    ) -> StoredFiring:
        cursor = await conn.execute(
            "INSERT INTO alert_firings (rule_id, tick_id, at_ms, payload) VALUES (?, ?, ?, ?)",
            (rule_id, tick_id, at_ms, dump(payload)),
        )
        ident = cursor.lastrowid
        await cursor.close()
        assert ident is not None
        # The firing row itself is the stream channel's log (streams resume from it by
        # id); the outbox holds one row per endpoint the rule names that the owner still
        # has and is not disabled (one deleted since is skipped).
        endpoints = await conn.execute_fetchall(
            "SELECT e.id FROM alert_rules r, json_each(r.params, '$.webhooks') w "
            "JOIN alert_endpoints e ON e.id = w.value AND e.owner = r.owner "
            "WHERE r.id = ? AND e.disabled_ms IS NULL ORDER BY w.key",
            (rule_id,),
        )
        for (endpoint_id,) in endpoints:
            await conn.execute_fetchall(
                "INSERT INTO alert_outbox (id, firing_id, channel, endpoint_id, next_at_ms) "
                "VALUES (?, ?, 'webhook', ?, ?)",
                (outbox_id(ident, "webhook", str(endpoint_id)), ident, str(endpoint_id), at_ms),
            )
        return StoredFiring(ident, rule_id, tick_id, at_ms, payload)

    async def _current(
        self, conn: aiosqlite.Connection, owner: str, rule_id: int
    ) -> StoredRule | None:
        rows = await conn.execute_fetchall(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = ? AND owner = ?",  # noqa: S608
            (rule_id, owner),
        )
        return next((rule_row(row) for row in rows), None)

    # -- reads -----------------------------------------------------------------------

    async def get(self, owner: str, rule_id: int) -> StoredRule | None:
        """One of the owner's rules (``None``: no such rule, or another owner's)."""
        return await self._store.query(
            lambda conn: self._current(conn, owner, rule_id), "cannot read alert rule"
        )

    async def owned(self, owner: str) -> list[StoredRule]:
        """The owner's rules, oldest first."""
        return await self._rules("WHERE owner = ? ORDER BY id", (owner,))

    async def all(self) -> list[StoredRule]:
        """Every rule of every owner (the engine loads them at start)."""
        return await self._rules("ORDER BY id", ())

    async def firings(self, owner: str, rule_id: int, limit: int) -> list[StoredFiring]:
        """A rule's newest firings first, at most ``limit`` (empty for another's rule)."""
        sql = (
            f"SELECT {FIRING_COLUMNS} FROM alert_firings WHERE rule_id = ? AND rule_id IN "  # noqa: S608
            "(SELECT id FROM alert_rules WHERE owner = ?) ORDER BY id DESC LIMIT ?"
        )

        async def query(conn: aiosqlite.Connection) -> list[StoredFiring]:
            return [
                firing_row(r) for r in await conn.execute_fetchall(sql, (rule_id, owner, limit))
            ]

        return await self._store.query(query, "cannot read alert firings")

    async def firings_after(self, owner: str, after: int, limit: int) -> list[StoredFiring]:
        """The owner's firings with an id above ``after``, oldest first, at most ``limit``
        (a stream resuming its ``alert`` events)."""
        sql = (
            f"SELECT {FIRING_COLUMNS} FROM alert_firings WHERE id > ? AND rule_id IN "  # noqa: S608
            "(SELECT id FROM alert_rules WHERE owner = ?) ORDER BY id LIMIT ?"
        )

        async def query(conn: aiosqlite.Connection) -> list[StoredFiring]:
            return [firing_row(r) for r in await conn.execute_fetchall(sql, (after, owner, limit))]

        return await self._store.query(query, "cannot read alert firings")

    async def fired_after(self, after: int, limit: int) -> list[tuple[str, StoredFiring]]:
        """Every owner's firings above ``after`` as (owner, firing), oldest first (the
        fan-out to the streams; a firing of a rule deleted since is gone with it)."""
        columns = ", ".join(f"f.{c}" for c in FIRING_COLUMNS.split(", "))
        sql = (
            f"SELECT r.owner, {columns} FROM alert_firings f "  # noqa: S608
            "JOIN alert_rules r ON r.id = f.rule_id WHERE f.id > ? ORDER BY f.id LIMIT ?"
        )

        async def query(conn: aiosqlite.Connection) -> list[tuple[str, StoredFiring]]:
            rows = await conn.execute_fetchall(sql, (after, limit))
            return [(str(r[0]), firing_row(r[1:])) for r in rows]

        return await self._store.query(query, "cannot read alert firings")

    async def latest_firing_id(self) -> int:
        """The highest firing id of any owner (0: none yet)."""

        async def query(conn: aiosqlite.Connection) -> int:
            (row,) = await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM alert_firings")
            return int(row[0])

        return await self._store.query(query, "cannot read alert firings")

    async def outbox(self) -> list[tuple[str, int, str, str]]:
        """Undelivered outbox rows as (id, firing id, channel, state), oldest first."""

        async def query(conn: aiosqlite.Connection) -> list[tuple[str, int, str, str]]:
            rows = await conn.execute_fetchall(
                "SELECT id, firing_id, channel, state FROM alert_outbox "
                "WHERE state = 'pending' ORDER BY firing_id, id"
            )
            return [(str(a), int(b), str(c), str(d)) for a, b, c, d in rows]

        return await self._store.query(query, "cannot read the alert outbox")

    async def _rules(self, where: str, params: Sequence[object]) -> list[StoredRule]:
        sql = f"SELECT {RULE_COLUMNS} FROM alert_rules {where}"  # noqa: S608 - fixed text

        async def query(conn: aiosqlite.Connection) -> list[StoredRule]:
            return [rule_row(r) for r in await conn.execute_fetchall(sql, params)]

        return await self._store.query(query, "cannot read alert rules")
