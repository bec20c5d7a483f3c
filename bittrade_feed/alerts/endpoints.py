"""Webhook endpoints of alert owners, in the ``alert_endpoints`` table.

An endpoint is a URL and a signing secret. The secret is returned once, by ``create``
and ``rotate``; listings never carry it. ``rotate`` keeps the old secret beside the new
one until ``now + overlap``: ``signing_keys`` gives both while that lasts, so a receiver
that still has the old secret keeps verifying (Standard Webhooks sends one signature
per key). Every write is one ``Store.transact`` call on the store's writer lane.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bittrade_feed.alerts.spec import ENDPOINT_PREFIX
from bittrade_feed.alerts.store import QuotaExceeded
from bittrade_feed.alerts.webhook import new_secret
from bittrade_feed.store.sqlite import Store

COLUMNS = "id, owner, url, secret, old_secret, old_until_ms, disabled_ms, created_ms, format"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of ``alert_endpoints``."""

    id: str
    owner: str
    url: str
    secret: str
    old_secret: str | None
    old_until_ms: int | None
    disabled_ms: int | None
    created_ms: int
    format: str = "standard"
    """The body format (``webhook.BODY_FORMATS``)."""

    def signing_keys(self, now_ms: int) -> list[str]:
        """The secrets that sign now: the current one, and the old one until it expires."""
        keys = [self.secret]
        if self.old_secret and self.old_until_ms is not None and now_ms < self.old_until_ms:
            keys.append(self.old_secret)
        return keys


def endpoint_row(row: Sequence[Any]) -> Endpoint:
    """An ``Endpoint`` from the ``COLUMNS`` of a row."""
    ident, owner, url, secret, old, until, disabled, created, body_format = row
    return Endpoint(
        str(ident),
        str(owner),
        str(url),
        str(secret),
        None if old is None else str(old),
        None if until is None else int(until),
        None if disabled is None else int(disabled),
        int(created),
        str(body_format or "standard"),  # a Redis hash from before formats has none
    )


class EndpointStore:
    """Reads and writes ``alert_endpoints`` of an open ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(
        self, owner: str, url: str, *, now_ms: int, limit: int, body_format: str = "standard"
    ) -> Endpoint:
        """A new endpoint with a fresh secret; ``QuotaExceeded`` if the owner is full."""
        endpoint = Endpoint(
            ENDPOINT_PREFIX + secrets.token_hex(8),
            owner,
            url,
            new_secret(),
            None,
            None,
            None,
            now_ms,
            body_format,
        )

        async def body(conn: aiosqlite.Connection) -> Endpoint:
            # Counted inside the writer's transaction, so concurrent creates cannot both pass.
            (row,) = await conn.execute_fetchall(
                "SELECT COUNT(*) FROM alert_endpoints WHERE owner = ?", (owner,)
            )
            if int(row[0]) >= limit:
                raise QuotaExceeded(
                    owner, limit, "webhook endpoints", "alerts.max_endpoints_per_owner"
                )
            await conn.execute_fetchall(
                f"INSERT INTO alert_endpoints ({COLUMNS}) VALUES (?,?,?,?,NULL,NULL,NULL,?,?)",  # noqa: S608
                (endpoint.id, owner, url, endpoint.secret, now_ms, body_format),
            )
            return endpoint

        return await self._store.transact(body, "cannot create webhook endpoint")

    async def delete(self, owner: str, endpoint_id: str) -> bool:
        """Delete the owner's endpoint and its undelivered rows; ``False`` if there is none."""

        async def body(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(
                "DELETE FROM alert_endpoints WHERE id = ? AND owner = ?", (endpoint_id, owner)
            )
            gone = cursor.rowcount == 1
            await cursor.close()
            if gone:
                await conn.execute_fetchall(
                    "DELETE FROM alert_outbox WHERE endpoint_id = ? AND state = 'pending'",
                    (endpoint_id,),
                )
            return gone

        return await self._store.transact(body, f"cannot delete webhook endpoint {endpoint_id}")

    async def rotate(
        self, owner: str, endpoint_id: str, *, now_ms: int, overlap_ms: int
    ) -> Endpoint | None:
        """A new secret; the current one keeps signing for ``overlap_ms``. ``None``: no such."""
        fresh = new_secret()

        async def body(conn: aiosqlite.Connection) -> Endpoint | None:
            # Read and write in one writer transaction: two concurrent rotations cannot
            # both demote the same secret and lose the one the other made.
            current = await self._get(conn, owner, endpoint_id)
            if current is None:
                return None
            await conn.execute_fetchall(
                "UPDATE alert_endpoints SET secret = ?, old_secret = ?, old_until_ms = ? "
                "WHERE id = ?",
                (fresh, current.secret, now_ms + overlap_ms, endpoint_id),
            )
            return Endpoint(
                current.id,
                owner,
                current.url,
                fresh,
                current.secret,
                now_ms + overlap_ms,
                current.disabled_ms,
                current.created_ms,
            )

        return await self._store.transact(body, f"cannot rotate webhook endpoint {endpoint_id}")

    async def _get(
        self, conn: aiosqlite.Connection, owner: str, endpoint_id: str
    ) -> Endpoint | None:
        rows = await conn.execute_fetchall(
            f"SELECT {COLUMNS} FROM alert_endpoints WHERE id = ? AND owner = ?",  # noqa: S608
            (endpoint_id, owner),
        )
        return next((endpoint_row(r) for r in rows), None)

    async def get(self, owner: str, endpoint_id: str) -> Endpoint | None:
        """One of the owner's endpoints (``None``: none, or another owner's)."""
        return await self._store.query(
            lambda conn: self._get(conn, owner, endpoint_id), "cannot read webhook endpoint"
        )

    async def owned(self, owner: str) -> list[Endpoint]:
        """The owner's endpoints, oldest first."""

        async def query(conn: aiosqlite.Connection) -> list[Endpoint]:
            rows = await conn.execute_fetchall(
                f"SELECT {COLUMNS} FROM alert_endpoints WHERE owner = ? "  # noqa: S608
                "ORDER BY created_ms, id",
                (owner,),
            )
            return [endpoint_row(r) for r in rows]

        return await self._store.query(query, "cannot read webhook endpoints")
