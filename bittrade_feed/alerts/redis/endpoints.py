"""Webhook endpoints in Redis (``backend.EndpointBackend``); each write is one Lua script."""

from __future__ import annotations

from redis.asyncio import Redis

from bittrade_feed.alerts.redis.keys import AlertKeys


class RedisEndpointStore:
    """The owners' webhook endpoints under ``{prefix}:alert:endpoint:<id>``."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._keys = AlertKeys.for_prefix(prefix)
