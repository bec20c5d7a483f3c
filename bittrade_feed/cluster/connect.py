"""Redis clients from ``[cluster]``: a URL, or Sentinel with a master name.

The cluster package is imported only when ``[cluster]`` is set, so a single daemon runs
without ``redis`` installed. Clients never
retry by themselves (our loops do, on their own schedule), because a blind retry of a
publish whose reply was lost would append the same price twice under two ids.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from bittrade_feed.config import ClusterConfig


def connect(config: ClusterConfig, *, timeout: float, name: str) -> Redis:
    """A client whose every command gives up after ``timeout`` seconds."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
        "client_name": name,
    }
    if not config.sentinels:
        return Redis.from_url(config.redis_url, **options)
    options.update(_url_options(config.redis_url))
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_address(a) for a in config.sentinels],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    client: Redis = sentinel.master_for(config.master_name, **options)
    return client


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _url_options(url: str) -> dict[str, Any]:
    """Password, user, database and TLS from ``redis_url`` (its host is Sentinel's to pick)."""
    if not url:
        return {}
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.path.strip("/").isdigit():
        options["db"] = int(parts.path.strip("/"))
    if parts.scheme == "rediss":
        options["ssl"] = True
    return options
