"""Several daemons on one Redis: one fetches, every one serves the same ticks under the same ids.

The id authority and the shared log live in Redis (a stream with explicit ids, appended by
one Lua script that refuses a stale leader); each daemon's SQLite is a replica of that log.
``redis`` is imported only when a cluster is configured, so a single daemon needs neither
it nor a Redis server. See ``node.ClusterNode`` for how the parts fit.
"""

import importlib.util

from bittrade_feed.errors import ConfigError

if importlib.util.find_spec("redis") is None:  # pragma: no cover - depends on the install
    raise ConfigError(
        [("cluster", "needs the redis package: pip install 'bittrade-feed[cluster]'")]
    )

from bittrade_feed.cluster.errors import ClusterUnavailable, Fenced
from bittrade_feed.cluster.node import ClusterNode

__all__ = ["ClusterNode", "ClusterUnavailable", "Fenced"]
