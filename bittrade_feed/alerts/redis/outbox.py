"""The outbox rows in Redis: the worker's side (``backend.OutboxBackend``) and an owner's
failed deliveries (``backend.DeliveryBackend``).

Each write is one Lua script that changes a row only in the state it expects, so two
concurrent retries of one failed row queue it once, and an attempt's outcome never lands
on a row retried, finished or deleted meanwhile. The outbox writes are not fenced: only
the leader runs the worker, and a deposed leader's last outcome is still true (a row it
delivered was delivered; at worst a row is sent twice under its one ``webhook-id``).
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from bittrade_feed.alerts.backend import DISABLED_ERROR, Due, Failed, Retry
from bittrade_feed.alerts.endpoints import endpoint_row
from bittrade_feed.alerts.redis.calls import call
from bittrade_feed.alerts.redis.keys import AlertKeys
from bittrade_feed.alerts.redis.scripts import (
    DISABLE,
    DUE,
    FINISH,
    PRELUDE,
    READ_FAILED,
    RESCHEDULE,
    RETRY,
)
from bittrade_feed.alerts.spec import MAX_WEBHOOKS


class RedisOutboxStore:
    """Due rows (zset ``{prefix}:alert:due`` by next_at_ms) and the outcome of attempts."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)
        self._due = redis.register_script(PRELUDE + DUE)
        self._reschedule = redis.register_script(PRELUDE + RESCHEDULE)
        self._finish = redis.register_script(PRELUDE + FINISH)
        self._disable = redis.register_script(PRELUDE + DISABLE)

    async def due(self, now_ms: int, limit: int) -> list[Due]:
        """Pending rows due at ``now_ms``, by (next_at_ms, id)."""
        reply: Any = await call(
            self._due(keys=[self._keys.rules], args=[self._keys.base, now_ms, limit]),
            "cannot read the alert outbox",
        )
        due: list[Due] = []
        for ident, attempts, at_ms, payload, *endpoint in reply:
            shown = endpoint_row(endpoint) if endpoint[0] else None
            due.append(Due(str(ident), int(attempts), int(at_ms), json.loads(payload), shown))
        return due

    async def nearest_due_ms(self) -> int | None:
        """The earliest ``next_at_ms`` of a pending row."""
        first: Any = await call(
            self._redis.zrange(self._keys.due, 0, 0, withscores=True),
            "cannot read the alert outbox",
        )
        return int(first[0][1]) if first else None

    async def depth(self) -> int:
        """Pending rows."""
        return int(await call(self._redis.zcard(self._keys.due), "cannot count the outbox"))

    async def reschedule(self, row_id: str, next_at_ms: int, error: str) -> None:
        """One more failed attempt; due again at ``next_at_ms``."""
        args: list[Any] = [self._keys.base, row_id, next_at_ms, error]
        await call(
            self._reschedule(keys=[self._keys.rules], args=args), "cannot reschedule a webhook"
        )

    async def finish(self, row_id: str, state: str, error: str | None) -> None:
        """The last attempt ended in ``state`` (delivered or failed)."""
        flag = "0" if error is None else "1"
        args: list[Any] = [self._keys.base, row_id, state, flag, error or ""]
        await call(
            self._finish(keys=[self._keys.rules], args=args), "cannot record a webhook attempt"
        )

    async def disable(self, row_id: str, endpoint_id: str, now_ms: int) -> None:
        """Disable the endpoint and fail the row, in one script."""
        args: list[Any] = [self._keys.base, row_id, endpoint_id, now_ms, DISABLED_ERROR]
        await call(
            self._disable(keys=[self._keys.rules], args=args),
            "cannot disable a webhook endpoint",
        )


class RedisDeliveries:
    """An owner's failed deliveries (zset ``{prefix}:alert:own-failed:<owner>``)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)
        self._failed = redis.register_script(PRELUDE + READ_FAILED)
        self._retry = redis.register_script(PRELUDE + RETRY)

    async def failed(self, owner: str, limit: int) -> list[Failed]:
        """The owner's failed deliveries, newest firing first (then by id), at most ``limit``."""
        # The zset orders one firing's rows by id descending; reading up to one firing's
        # worth more than asked is enough to cut at ``limit`` in the order SQLite gives.
        args: list[Any] = [self._keys.base, owner, limit + MAX_WEBHOOKS]
        reply: Any = await call(
            self._failed(keys=[self._keys.rules], args=args), "cannot read failed deliveries"
        )
        rows = [
            Failed(str(i), int(r), int(f), str(e), int(a), None if err is None else str(err))
            for i, r, f, e, a, err in reply
        ]
        rows.sort(key=lambda row: (-row.firing_id, row.id))
        return rows[:limit]

    async def retry(self, owner: str, delivery_id: str, now_ms: int) -> Retry:
        """Put a failed delivery back, due now, with a fresh attempt count."""
        args: list[Any] = [self._keys.base, owner, delivery_id, now_ms]
        reply = await call(
            self._retry(keys=[self._keys.rules], args=args),
            f"cannot retry delivery {delivery_id}",
        )
        return Retry(str(reply))
