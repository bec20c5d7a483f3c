"""Webhook endpoints in Redis (``backend.EndpointBackend``); each write is one Lua script.

The quota is counted inside the create script, and a rotation reads and replaces the
secret in one step, so concurrent requests on any nodes behave as on one daemon. Secrets
are stored as they are in SQLite: protect Redis like the database (ACL, TLS, no public
port).
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis

from bittrade_feed.alerts.endpoints import Endpoint, endpoint_row
from bittrade_feed.alerts.redis.calls import call
from bittrade_feed.alerts.redis.keys import AlertKeys
from bittrade_feed.alerts.redis.scripts import (
    CREATE_ENDPOINT,
    DELETE_ENDPOINT,
    ENDPOINT_FIELDS,
    PRELUDE,
    READ_ENDPOINTS,
    ROTATE_ENDPOINT,
)
from bittrade_feed.alerts.spec import ENDPOINT_PREFIX
from bittrade_feed.alerts.store import QuotaExceeded
from bittrade_feed.alerts.webhook import new_secret
from bittrade_feed.cluster.errors import ClusterUnavailable


class RedisEndpointStore:
    """The owners' webhook endpoints under ``{prefix}:alert:endpoint:<id>``."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)
        self._create = redis.register_script(PRELUDE + CREATE_ENDPOINT)
        self._delete = redis.register_script(PRELUDE + DELETE_ENDPOINT)
        self._rotate = redis.register_script(PRELUDE + ROTATE_ENDPOINT)
        self._read = redis.register_script(PRELUDE + READ_ENDPOINTS)

    async def create(
        self, owner: str, url: str, *, now_ms: int, limit: int, body_format: str = "standard"
    ) -> Endpoint:
        """A new endpoint with a fresh secret; ``QuotaExceeded`` if the owner is full."""
        ident, secret = ENDPOINT_PREFIX + secrets.token_hex(8), new_secret()
        args: list[Any] = [self._keys.base, owner, limit, ident, url, secret, now_ms, body_format]
        reply = int(
            await call(
                self._create(keys=[self._keys.rules], args=args), "cannot create webhook endpoint"
            )
        )
        if reply == -1:
            raise QuotaExceeded(owner, limit, "webhook endpoints", "alerts.max_endpoints_per_owner")
        if reply == -2:  # 64 random bits collided: as SQLite's primary key would refuse it
            raise ClusterUnavailable(f"cannot create webhook endpoint: id {ident} is taken")
        return Endpoint(ident, owner, url, secret, None, None, None, now_ms, body_format)

    async def delete(self, owner: str, endpoint_id: str) -> bool:
        """Delete the owner's endpoint and its pending rows; ``False`` if there is none."""
        reply = await call(
            self._delete(keys=[self._keys.rules], args=[self._keys.base, owner, endpoint_id]),
            f"cannot delete webhook endpoint {endpoint_id}",
        )
        return bool(int(reply))

    async def rotate(
        self, owner: str, endpoint_id: str, *, now_ms: int, overlap_ms: int
    ) -> Endpoint | None:
        """A new secret; the current one keeps signing for ``overlap_ms``. ``None``: no such."""
        args: list[Any] = [self._keys.base, owner, endpoint_id, new_secret(), now_ms + overlap_ms]
        reply: Any = await call(
            self._rotate(keys=[self._keys.rules], args=args),
            f"cannot rotate webhook endpoint {endpoint_id}",
        )
        return endpoint_row([endpoint_id, *reply]) if reply else None

    async def get(self, owner: str, endpoint_id: str) -> Endpoint | None:
        """One of the owner's endpoints (``None``: none, or another owner's)."""
        fields: Any = await call(
            self._redis.hmget(self._keys.endpoint(endpoint_id), list(ENDPOINT_FIELDS)),
            "cannot read webhook endpoint",
        )
        return endpoint_row([endpoint_id, *fields]) if fields[0] == owner else None

    async def owned(self, owner: str) -> list[Endpoint]:
        """The owner's endpoints, oldest first."""
        reply: Any = await call(
            self._read(keys=[self._keys.rules], args=[self._keys.base, owner]),
            "cannot read webhook endpoints",
        )
        return [endpoint_row(r) for r in reply]
