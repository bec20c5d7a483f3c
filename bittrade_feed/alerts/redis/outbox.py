"""The outbox rows in Redis: the worker's side (``backend.OutboxBackend``) and an owner's
failed deliveries (``backend.DeliveryBackend``). Each write is one Lua script that changes
a row only in the state it expects, so two retries of one failed row queue it once."""

from __future__ import annotations

from redis.asyncio import Redis

from bittrade_feed.alerts.redis.keys import AlertKeys


class RedisOutboxStore:
    """Due rows (zset ``{prefix}:alert:due`` by next_at_ms) and the outcome of attempts."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)


class RedisDeliveries:
    """An owner's failed deliveries (zset ``{prefix}:alert:own-failed:<owner>``)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)
