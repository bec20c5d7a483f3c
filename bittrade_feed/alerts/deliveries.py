"""Failed webhook deliveries of one owner: listed, and put back in the outbox on request.

A retry is one writer transaction that checks and changes the row together, so two
concurrent retries of one delivery queue it once (the second finds it pending).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from bittrade_feed.store.sqlite import Store

OWNED = (
    "FROM alert_outbox o JOIN alert_firings f ON f.id = o.firing_id "
    "JOIN alert_rules r ON r.id = f.rule_id "
    "WHERE o.channel = 'webhook' AND r.owner = ?"
)


@dataclass(frozen=True, slots=True)
class Failed:
    """One failed webhook delivery."""

    id: str
    rule_id: int
    firing_id: int
    endpoint_id: str
    attempts: int
    last_error: str | None


class Retry(StrEnum):
    """What a retry request came to."""

    QUEUED = "queued"
    NOT_FOUND = "not found"
    NOT_FAILED = "not failed"
    ENDPOINT_GONE = "endpoint gone"
    """Deleted or disabled (410): a retry would fail at once."""


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
