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
from redis.exceptions import RedisError

from bittrade_feed.config import ClusterConfig


class Connector:
    """Makes this daemon's Redis clients, and watches which primary Sentinel names."""

    def __init__(self, config: ClusterConfig, timeout: float) -> None:
        self.config = config
        self.sentinel: Sentinel | None = None
        self.primary: tuple[str, int] | None = None
        """The primary Sentinel named at the last look."""
        if config.sentinels:
            self.sentinel = Sentinel(  # type: ignore[no-untyped-call]
                [_address(a) for a in config.sentinels],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )

    def client(self, *, timeout: float, name: str) -> Redis:
        """A client whose every command gives up after ``timeout`` seconds."""
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
            "client_name": name,
        }
        if self.sentinel is None:
            return Redis.from_url(self.config.redis_url, **options)
        options.update(_url_options(self.config.redis_url))
        client: Redis = self.sentinel.master_for(self.config.master_name, **options)
        return client

    async def primary_moved(self) -> bool:
        """Whether Sentinel now names another primary than at the last look.

        redis-py re-resolves the primary only when a command fails, but after a failover
        the old primary keeps accepting writes until Sentinel demotes it (about 10 s here):
        writes that are then lost. Asking every quarter lease bounds that window.
        """
        if self.sentinel is None:
            return False
        try:
            primary: tuple[str, int] = await self.sentinel.discover_master(self.config.master_name)
        except (RedisError, OSError):
            return False  # no sentinel answers: the lease round trip tells the rest
        moved = self.primary is not None and primary != self.primary
        self.primary = primary
        return moved


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
