"""The ``alert_outbox`` webhook rows in SQLite: an owner's failed deliveries (listed, and
put back on request) and the outbox worker's side (due rows, the outcome of each attempt).

Every write is one writer transaction that checks and changes the row together, so two
concurrent retries of one delivery queue it once (the second finds it pending), and an
attempt's outcome never lands on a row that was retried, finished or deleted meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiosqlite

from bittrade_feed.alerts.backend import DISABLED_ERROR, Due, Failed, Retry
from bittrade_feed.alerts.endpoints import COLUMNS, endpoint_row
from bittrade_feed.store.sqlite import Store

__all__ = ["Deliveries", "Failed", "OutboxStore", "Retry"]

OWNED = (
    "FROM alert_outbox o JOIN alert_firings f ON f.id = o.firing_id "
    "JOIN alert_rules r ON r.id = f.rule_id "
    "WHERE o.channel = 'webhook' AND r.owner = ?"
)
ENDPOINT_COLUMNS = ", ".join(f"e.{c}" for c in COLUMNS.split(", "))
DUE_SQL = (
    f"SELECT o.id, o.attempts, f.at_ms, f.payload, {ENDPOINT_COLUMNS} "  # noqa: S608
    "FROM alert_outbox o JOIN alert_firings f ON f.id = o.firing_id "
    "LEFT JOIN alert_endpoints e ON e.id = o.endpoint_id "
    "WHERE o.state = 'pending' AND o.channel = 'webhook' AND o.next_at_ms <= ? "
    "ORDER BY o.next_at_ms, o.id LIMIT ?"
)
PENDING = "FROM alert_outbox WHERE state = 'pending' AND channel = 'webhook'"


class Deliveries:
    """The failed webhook rows of ``alert_outbox``, per owner."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def failed(self, owner: str, limit: int) -> list[Failed]:
        """The owner's failed deliveries, newest firing first, at most ``limit``."""
        sql = (
            "SELECT o.id, f.rule_id, o.firing_id, o.endpoint_id, o.attempts, o.last_error "
            f"{OWNED} AND o.state = 'failed' ORDER BY o.firing_id DESC, o.id LIMIT ?"
        )

        async def query(conn: aiosqlite.Connection) -> list[Failed]:
            rows = await conn.execute_fetchall(sql, (owner, limit))
            return [
                Failed(str(a), int(b), int(c), str(d), int(e), None if g is None else str(g))
                for a, b, c, d, e, g in rows
            ]

        return await self._store.query(query, "cannot read failed deliveries")

    async def retry(self, owner: str, delivery_id: str, now_ms: int) -> Retry:
        """Put a failed delivery back, due now, with a fresh attempt count."""

        async def body(conn: aiosqlite.Connection) -> Retry:
            rows = await conn.execute_fetchall(
                "SELECT o.state, e.disabled_ms, e.id FROM alert_outbox o "
                "JOIN alert_firings f ON f.id = o.firing_id "
                "JOIN alert_rules r ON r.id = f.rule_id "
                "LEFT JOIN alert_endpoints e ON e.id = o.endpoint_id AND e.owner = r.owner "
                "WHERE o.channel = 'webhook' AND r.owner = ? AND o.id = ?",
                (owner, delivery_id),
            )
            if not rows:
                return Retry.NOT_FOUND
            ((state, disabled, endpoint),) = rows
            if state != "failed":
                return Retry.NOT_FAILED
            if endpoint is None or disabled is not None:
                return Retry.ENDPOINT_GONE
            await conn.execute_fetchall(
                "UPDATE alert_outbox SET state = 'pending', attempts = 0, next_at_ms = ? "
                "WHERE id = ?",
                (now_ms, delivery_id),
            )
            return Retry.QUEUED

        return await self._store.transact(body, f"cannot retry delivery {delivery_id}")


def _due(row: Sequence[Any]) -> Due:
    ident, attempts, at_ms, payload, *rest = row
    endpoint = None if rest[0] is None else endpoint_row(rest)
    return Due(str(ident), int(attempts), int(at_ms), json.loads(payload), endpoint)


class OutboxStore:
    """The outbox worker's reads and writes of ``alert_outbox`` (``backend.OutboxBackend``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def due(self, now_ms: int, limit: int) -> list[Due]:
        """Pending webhook rows due at ``now_ms``, by (next_at_ms, id)."""

        async def query(conn: aiosqlite.Connection) -> list[Due]:
            return [_due(r) for r in await conn.execute_fetchall(DUE_SQL, (now_ms, limit))]

        return await self._store.query(query, "cannot read the alert outbox")

    async def nearest_due_ms(self) -> int | None:
        """The earliest ``next_at_ms`` of a pending row."""

        async def query(conn: aiosqlite.Connection) -> int | None:
            (row,) = await conn.execute_fetchall(f"SELECT MIN(next_at_ms) {PENDING}")
            return None if row[0] is None else int(row[0])

        return await self._store.query(query, "cannot read the alert outbox")

    async def depth(self) -> int:
        """Pending webhook rows."""

        async def query(conn: aiosqlite.Connection) -> int:
            (row,) = await conn.execute_fetchall(f"SELECT COUNT(*) {PENDING}")
            return int(row[0])

        return await self._store.query(query, "cannot count the outbox")

    async def reschedule(self, row_id: str, next_at_ms: int, error: str) -> None:
        """One more failed attempt; due again at ``next_at_ms``."""
        await self._store.transact(
            lambda conn: conn.execute_fetchall(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_at_ms = ?, "
                "last_error = ? WHERE id = ? AND state = 'pending'",
                (next_at_ms, error, row_id),
            ),
            "cannot reschedule a webhook",
        )

    async def finish(self, row_id: str, state: str, error: str | None) -> None:
        """The last attempt ended in ``state`` (delivered or failed)."""
        await self._store.transact(
            lambda conn: conn.execute_fetchall(
                "UPDATE alert_outbox SET state = ?, attempts = attempts + 1, last_error = ? "
                "WHERE id = ? AND state = 'pending'",
                (state, error, row_id),
            ),
            "cannot record a webhook attempt",
        )

    async def disable(self, row_id: str, endpoint_id: str, now_ms: int) -> None:
        """Disable the endpoint and fail the row, in one transaction."""

        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute_fetchall(
                "UPDATE alert_endpoints SET disabled_ms = ? WHERE id = ? AND disabled_ms IS NULL",
                (now_ms, endpoint_id),
            )
            await conn.execute_fetchall(
                "UPDATE alert_outbox SET state = 'failed', attempts = attempts + 1, "
                "last_error = ? WHERE id = ? AND state = 'pending'",
                (DISABLED_ERROR, row_id),
            )

        await self._store.transact(body, "cannot disable a webhook endpoint")
