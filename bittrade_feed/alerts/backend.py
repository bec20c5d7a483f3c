"""What the engine, the REST layer and the outbox worker need from wherever alerts are kept.

Two implementations of each: SQLite (one daemon: ``store.AlertStore``,
``endpoints.EndpointStore``, ``deliveries.Deliveries``, ``deliveries.OutboxStore``) and
Redis (a cluster: ``bittrade_feed.alerts.redis``, under the cluster's key prefix, so every
node serves the API from the same data and a new leader finds the undelivered work).

The protocols::

    class RuleBackend(Protocol):           # rules, their firings, the outbox rows they queue
        async def create(self, owner, rule, *, last_tick_id, now_ms, max_rules) -> StoredRule
        async def replace(self, owner, rule_id, rule, *, version, last_tick_id) -> StoredRule
        async def delete(self, owner, rule_id, *, version) -> None
        async def commit(self, changes: Sequence[Commit]) -> list[StoredFiring]
        async def test_fire(self, owner, rule_id, payload, now_ms) -> StoredFiring
        async def get(self, owner, rule_id) -> StoredRule | None
        async def owned(self, owner) -> list[StoredRule]
        async def all(self) -> list[StoredRule]
        async def firings(self, owner, rule_id, limit) -> list[StoredFiring]    # newest first
        async def firings_after(self, owner, after, limit) -> list[StoredFiring]  # oldest first
        async def latest_firing_id(self) -> int                 # 0: none yet
        async def outbox(self) -> list[tuple[str, int, str, str]]  # pending: id, firing, ...

    class EndpointBackend(Protocol):
        async def create(self, owner, url, *, now_ms, limit, body_format="standard") -> Endpoint
        async def delete(self, owner, endpoint_id) -> bool
        async def rotate(self, owner, endpoint_id, *, now_ms, overlap_ms) -> Endpoint | None
        async def get(self, owner, endpoint_id) -> Endpoint | None
        async def owned(self, owner) -> list[Endpoint]

    class DeliveryBackend(Protocol):       # an owner's failed webhook deliveries
        async def failed(self, owner, limit) -> list[Failed]
        async def retry(self, owner, delivery_id, now_ms) -> Retry

    class OutboxBackend(Protocol):         # the outbox worker's side of the same rows
        async def due(self, now_ms, limit) -> list[Due]      # by (next_at_ms, id)
        async def nearest_due_ms(self) -> int | None
        async def depth(self) -> int
        async def reschedule(self, row_id, next_at_ms, error) -> None
        async def finish(self, row_id, state, error) -> None  # "delivered" | "failed"
        async def disable(self, row_id, endpoint_id, now_ms) -> None

    class FiringFeed(Protocol):            # cluster only (RedisAlertStore)
        async def follow_fired(self, last: str, block_ms: int)
            -> tuple[str, list[tuple[str, StoredFiring]]]
        async def follow_rule_changes(self, last: str, block_ms: int) -> tuple[str, list[int]]

Errors, the same for both: ``QuotaExceeded`` and ``VersionMismatch`` (409/412/404 at the
REST layer), any other ``StoreError`` (503). The Redis store's ``commit`` also raises
``bittrade_feed.cluster.errors.Fenced`` (a ``StoreError``) when the caller no longer holds
the leader lease; nothing is written then.

The Redis implementations (``bittrade_feed.alerts.redis``)::

    RedisAlertStore(redis: Redis, prefix: str, fence: Callable[[], str | None],
                    *, reader: Redis | None = None,
                    history: int = FIRING_HISTORY)           # RuleBackend + FiringFeed
    RedisEndpointStore(redis: Redis, prefix: str)           # EndpointBackend
    RedisDeliveries(redis: Redis, prefix: str)              # DeliveryBackend
    RedisOutboxStore(redis: Redis, prefix: str)             # OutboxBackend

``prefix`` is ``cluster.feed_key`` (every key is under its ``{prefix}`` hash tag, beside
the shared log); ``fence`` returns the current lease token (``Lease.token``) or ``None``;
``reader`` is the client for the blocking ``follow_*`` reads (its socket timeout must be
above ``block_ms``; defaults to ``redis``); ``history`` is how many firings are kept per
rule (1000).

``follow_fired(last, block_ms)``: waits up to ``block_ms`` for firings committed (by
``commit`` or ``test_fire``, on any node) after stream position ``last``, and returns the
position to pass next time with the ``(owner, firing)`` pairs, oldest first. ``last="$"``
means "from now": the position returned is then the stream's current end (a concrete id,
even when nothing arrived), so no firing committed between two calls is missed.
Firing ids are handed out one by one and every firing is appended, so the ids a node reads
are consecutive unless the stream was trimmed past it (it fell more than
``rules.FIRED_MAXLEN`` entries behind) or Redis lost data: fill such a jump with
``firings_after``. ``follow_rule_changes`` is the same over the ids of rules created,
replaced or deleted (an id may repeat; read the rule again to learn what it is now).
Start it before ``all()`` when taking over, so no change between the two is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.rules import Rule
from bittrade_feed.alerts.store import Commit, StoredFiring, StoredRule

DISABLED_ERROR = "HTTP 410: endpoint disabled"
"""The ``last_error`` of a row whose receiver answered 410 (both backends write it)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """One failed webhook delivery."""

    id: str
    rule_id: int
    firing_id: int
    endpoint_id: str
    attempts: int
    last_error: str | None


class Retry(StrEnum):
    """What a retry request came to."""

    QUEUED = "queued"
    NOT_FOUND = "not found"
    NOT_FAILED = "not failed"
    ENDPOINT_GONE = "endpoint gone"
    """Deleted or disabled (410): a retry would fail at once."""


@dataclass(frozen=True, slots=True)
class Due:
    """One pending webhook row, with what sending it needs."""

    id: str
    attempts: int
    fired_ms: int
    payload: dict[str, Any]
    endpoint: Endpoint | None
    """``None``: the endpoint was deleted since the row was queued."""


class RuleBackend(Protocol):
    """Rules, their firings and the outbox rows a firing queues (see the module docstring)."""

    async def create(  # noqa: D102
        self, owner: str, rule: Rule, *, last_tick_id: int, now_ms: int, max_rules: int
    ) -> StoredRule: ...
    async def replace(  # noqa: D102
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None, last_tick_id: int
    ) -> StoredRule: ...
    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None: ...  # noqa: D102
    async def commit(self, changes: Sequence[Commit]) -> list[StoredFiring]: ...  # noqa: D102
    async def test_fire(  # noqa: D102
        self, owner: str, rule_id: int, payload: dict[str, Any], now_ms: int
    ) -> StoredFiring: ...
    async def get(self, owner: str, rule_id: int) -> StoredRule | None: ...  # noqa: D102
    async def owned(self, owner: str) -> list[StoredRule]: ...  # noqa: D102
    async def all(self) -> list[StoredRule]: ...  # noqa: D102
    async def firings(self, owner: str, rule_id: int, limit: int) -> list[StoredFiring]: ...  # noqa: D102
    async def firings_after(  # noqa: D102
        self, owner: str, after: int, limit: int
    ) -> list[StoredFiring]: ...
    async def latest_firing_id(self) -> int: ...  # noqa: D102
    async def outbox(self) -> list[tuple[str, int, str, str]]: ...  # noqa: D102


class EndpointBackend(Protocol):
    """Webhook endpoints of owners; the secret leaves only through create and rotate."""

    async def create(  # noqa: D102
        self, owner: str, url: str, *, now_ms: int, limit: int, body_format: str = "standard"
    ) -> Endpoint: ...
    async def delete(self, owner: str, endpoint_id: str) -> bool: ...  # noqa: D102
    async def rotate(  # noqa: D102
        self, owner: str, endpoint_id: str, *, now_ms: int, overlap_ms: int
    ) -> Endpoint | None: ...
    async def get(self, owner: str, endpoint_id: str) -> Endpoint | None: ...  # noqa: D102
    async def owned(self, owner: str) -> list[Endpoint]: ...  # noqa: D102


class DeliveryBackend(Protocol):
    """An owner's failed webhook deliveries: listed, and put back in the outbox."""

    async def failed(self, owner: str, limit: int) -> list[Failed]: ...  # noqa: D102
    async def retry(self, owner: str, delivery_id: str, now_ms: int) -> Retry: ...  # noqa: D102


class OutboxBackend(Protocol):
    """The outbox worker's data access: due rows, and the outcome of each attempt.

    Every write changes a row only while it is ``pending`` (a row retried, finished or
    deleted meanwhile is left as it is).
    """

    async def due(self, now_ms: int, limit: int) -> list[Due]:
        """Pending webhook rows due at ``now_ms``, by (next_at_ms, id), at most ``limit``."""
        ...

    async def nearest_due_ms(self) -> int | None:
        """The earliest ``next_at_ms`` of a pending row (``None``: none is pending)."""
        ...

    async def depth(self) -> int:
        """How many webhook rows are pending."""
        ...

    async def reschedule(self, row_id: str, next_at_ms: int, error: str) -> None:
        """One more failed attempt; due again at ``next_at_ms``."""
        ...

    async def finish(self, row_id: str, state: str, error: str | None) -> None:
        """The last attempt: ``state`` is ``delivered`` or ``failed``."""
        ...

    async def disable(self, row_id: str, endpoint_id: str, now_ms: int) -> None:
        """The receiver answered 410: disable the endpoint and fail the row, together."""
        ...


class FiringFeed(Protocol):
    """Cluster only: firings and rule changes made on any node, as they are committed."""

    async def follow_fired(  # noqa: D102
        self, last: str, block_ms: int
    ) -> tuple[str, list[tuple[str, StoredFiring]]]: ...
    async def follow_rule_changes(self, last: str, block_ms: int) -> tuple[str, list[int]]: ...  # noqa: D102
