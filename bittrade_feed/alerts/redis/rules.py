"""Rules, firings and the outbox rows a firing queues, in Redis (``backend.RuleBackend``).

See ``backend`` for the interface and ``keys`` for the layout. Each write is one Lua
script (``scripts``), so quotas, If-Match versions and "one firing per (rule, tick)" are
checked at Redis in the same atomic step as the write they guard, whichever node asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from redis.asyncio import Redis

from bittrade_feed.alerts.redis.feed import follow
from bittrade_feed.alerts.redis.keys import AlertKeys
from bittrade_feed.alerts.store import StoredFiring

FIRING_HISTORY = 1000
"""Firings kept per rule (the oldest go, with their delivered and failed rows)."""
FIRED_MAXLEN = 10_000
"""Entries the ``fired`` stream keeps (approximately): how far a node's fan-out may lag."""
CHANGES_MAXLEN = 10_000
"""Entries the ``rule-changes`` stream keeps (approximately)."""


class RedisAlertStore:
    """``RuleBackend`` and ``FiringFeed`` on Redis; ``commit`` is fenced by ``fence()``."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        fence: Callable[[], str | None],
        *,
        reader: Redis | None = None,
        history: int = FIRING_HISTORY,
    ) -> None:
        self._redis = redis
        self._reader = reader or redis
        self._keys = AlertKeys.for_prefix(prefix)
        self._fence = fence
        self._history = history

    async def follow_fired(
        self, last: str, block_ms: int
    ) -> tuple[str, list[tuple[str, StoredFiring]]]:
        """Firings committed after ``last`` (``"$"``: from now), as (owner, firing) pairs."""
        position, entries = await follow(self._reader, self._keys.fired, last, block_ms)
        return position, [(fields["o"], decode_firing(fields["f"])) for _, fields in entries]

    async def follow_rule_changes(self, last: str, block_ms: int) -> tuple[str, list[int]]:
        """Ids of rules created, replaced or deleted after ``last`` (``"$"``: from now)."""
        position, entries = await follow(self._reader, self._keys.rule_changes, last, block_ms)
        return position, [int(fields["r"]) for _, fields in entries]


def decode_firing(text: str) -> StoredFiring:
    """A firing from the JSON the scripts write: ``[id, rule_id, tick_id, at_ms, payload]``."""
    ident, rule_id, tick_id, at_ms, payload = json.loads(text)
    tick = None if tick_id is None else int(tick_id)
    return StoredFiring(int(ident), int(rule_id), tick, int(at_ms), dict(payload))
