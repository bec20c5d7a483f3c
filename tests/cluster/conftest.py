"""Fixtures of the cluster tests: real redis-server processes, fake exchanges."""

from tests.cluster.redisproc import redis_server
from tests.daemon import daemon_config, fx

__all__ = ["daemon_config", "fx", "redis_server"]
