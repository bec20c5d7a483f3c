"""The alert data in Redis, for a cluster: every node serves it, the leader delivers it.

Imported only in cluster mode (it needs the ``redis`` package, like
``bittrade_feed.cluster``). See ``bittrade_feed.alerts.backend`` for the interfaces.
"""

from bittrade_feed.alerts.redis.endpoints import RedisEndpointStore
from bittrade_feed.alerts.redis.outbox import RedisDeliveries, RedisOutboxStore
from bittrade_feed.alerts.redis.rules import RedisAlertStore

__all__ = ["RedisAlertStore", "RedisDeliveries", "RedisEndpointStore", "RedisOutboxStore"]
