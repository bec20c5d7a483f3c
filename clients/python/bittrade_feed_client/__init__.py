"""Subscribe to a bittrade-feed daemon's price stream from Python.

::

    async with FeedClient("http://localhost:8080", pairs=["BTC-USD"]) as feed:
        async for tick in feed:
            print(tick.pair, tick.price)

or, in a script, ``for tick in subscribe("http://localhost:8080"): ...``. Alerts come
over the same stream (``async for alert in feed.alerts()``); ``AlertsAPI`` manages the
rules, webhook endpoints and deliveries behind them.
"""

from bittrade_feed_client._version import __version__
from bittrade_feed_client.alertmodels import AlertRule, Delivery, Webhook, WebhookTest
from bittrade_feed_client.alerts_api import AlertsAPI
from bittrade_feed_client.client import FeedClient
from bittrade_feed_client.connection import backoff_delay, stream_url
from bittrade_feed_client.credentials import TokenProvider
from bittrade_feed_client.errors import (
    AuthError,
    FeedError,
    ForbiddenError,
    GaveUp,
    ProtocolError,
    RequestRejected,
    ServiceError,
    Unauthorized,
)
from bittrade_feed_client.models import (
    SIMULATED_REASON,
    Alert,
    PairStatus,
    State,
    StateChange,
    Tick,
)
from bittrade_feed_client.sse import Event, EventStreamParser
from bittrade_feed_client.sync import subscribe

__all__ = [
    "__version__",
    "FeedClient",
    "subscribe",
    "Tick",
    "Alert",
    "AlertsAPI",
    "AlertRule",
    "Webhook",
    "WebhookTest",
    "Delivery",
    "PairStatus",
    "State",
    "SIMULATED_REASON",
    "StateChange",
    "FeedError",
    "RequestRejected",
    "Unauthorized",
    "AuthError",
    "ForbiddenError",
    "TokenProvider",
    "ProtocolError",
    "GaveUp",
    "ServiceError",
    "Event",
    "EventStreamParser",
    "backoff_delay",
    "stream_url",
]
