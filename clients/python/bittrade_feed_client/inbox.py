"""The alerts a subscription received, waiting for ``FeedClient.alerts()``.

The daemon delivers each alert at least once (a reconnect resumes after the highest id
seen, so a retry may repeat one); the inbox hands out each id once, in increasing order,
and remembers the highest, which the next connection sends as ``alerts_after``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from bittrade_feed_client.models import Alert

log = logging.getLogger("bittrade_feed_client")


class AlertInbox:
    """Received alerts, deduplicated by id, for one consumer."""

    def __init__(self, after: int | None, limit: int) -> None:
        self.last_id = after
        """The highest alert id received (``None``: none yet, and no resume point given)."""
        self._limit = limit
        self._queue: deque[Alert] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def offer(self, alert: Alert) -> bool:
        """Queue ``alert`` unless its id was already seen; whether it was queued."""
        if self.last_id is not None and alert.id <= self.last_id:
            return False
        self.last_id = alert.id
        if len(self._queue) >= self._limit:
            # Nobody reads them: keep the newest, as latest() does for prices.
            dropped = self._queue.popleft()
            log.warning("alert %d dropped: %d alerts wait unread", dropped.id, self._limit)
        self._queue.append(alert)
        self._ready.set()
        return True

    def close(self) -> None:
        """No more alerts will come: a waiting ``take`` returns what is left, then ``None``."""
        self._closed = True
        self._ready.set()

    async def take(self) -> Alert | None:
        """The next alert, waiting for one; ``None`` once closed and empty."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()
