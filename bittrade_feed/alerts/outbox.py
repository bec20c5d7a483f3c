"""The webhook outbox worker: delivers the ``alert_outbox`` webhook rows, at least once.

A row is written in the firing's own transaction, and its state changes only after an
attempt has ended, so a crash (or a cancel) at any point leaves it ``pending`` and the
next worker sends it again, under the same ``webhook-id`` (the row id): receivers drop
duplicates by it. One worker per daemon, one attempt at a time, oldest due first.

After an attempt:
- 2xx: ``delivered`` (latency from the firing observed);
- 410: the endpoint is disabled and the row ``failed`` (the receiver asked us to stop);
- refused by the SSRF guard (URL rules, or an address checked at connect time by the
  session's resolver): ``failed``, since no retry can change the answer;
- anything else: retried after a full-jitter exponential backoff (``backoff``), or later
  if ``Retry-After`` says so, until ``max_attempts``; then ``failed``.
A row whose endpoint was deleted or disabled meanwhile is ``failed`` without a request.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiosqlite
import structlog

from bittrade_feed.alerts.endpoints import COLUMNS, Endpoint, endpoint_row
from bittrade_feed.alerts.ssrf import Policy
from bittrade_feed.alerts.webhook import Outcome, message, send, signed_headers
from bittrade_feed.clock import Clock
from bittrade_feed.ops.metrics import AlertMetrics
from bittrade_feed.store.sqlite import Store

log = structlog.get_logger("bittrade_feed.alerts.outbox")

BATCH = 50
"""Due rows read at once."""
POLL_S = 5.0
"""Longest sleep between looks at the outbox (new rows also wake the worker)."""
ENDPOINT_COLUMNS = ", ".join(f"e.{c}" for c in COLUMNS.split(", "))
DUE_SQL = (
    f"SELECT o.id, o.attempts, f.at_ms, f.payload, {ENDPOINT_COLUMNS} "  # noqa: S608
    "FROM alert_outbox o JOIN alert_firings f ON f.id = o.firing_id "
    "LEFT JOIN alert_endpoints e ON e.id = o.endpoint_id "
    "WHERE o.state = 'pending' AND o.channel = 'webhook' AND o.next_at_ms <= ? "
    "ORDER BY o.next_at_ms, o.id LIMIT ?"
)

SessionFactory = Callable[[], AbstractAsyncContextManager[aiohttp.ClientSession]]


def backoff(
    attempts: int, base: float, cap: float, rand: random.Random, retry_after: float | None = None
) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (full jitter).

    Uniform in [0, min(cap, base * 2**(attempts-1))]; a receiver's ``Retry-After`` that
    asks for longer wins (it is already bounded by ``webhook.MAX_RETRY_AFTER``).
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempts - 1, 0), 60))
    wait = rand.uniform(0.0, ceiling)
    return max(wait, retry_after) if retry_after is not None else wait


@dataclass(frozen=True, slots=True)
class Due:
    """One pending webhook row, with what sending it needs."""

    id: str
    attempts: int
    fired_ms: int
    payload: dict[str, Any]
    endpoint: Endpoint | None
    """``None``: the endpoint was deleted since the row was queued."""


def _due(row: Sequence[Any]) -> Due:
    ident, attempts, at_ms, payload, *rest = row
    endpoint = None if rest[0] is None else endpoint_row(rest)
    return Due(str(ident), int(attempts), int(at_ms), json.loads(payload), endpoint)


class OutboxWorker:
    """Sends due webhook rows until cancelled; ``poke`` when new rows were committed."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        policy: Policy,
        session: SessionFactory,
        *,
        max_attempts: int,
        retry_base: float,
        retry_cap: float,
        metrics: AlertMetrics | None = None,
        rand: random.Random | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._policy = policy
        self._session = session
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._metrics = metrics
        self._rand = rand or random.Random()
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """New rows may be due: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (a supervised task: a crash restarts it, losing nothing)."""
        async with self._session() as session:
            while True:
                # Cleared before reading, so a poke during the read is not lost.
                self._wake.clear()
                rows = await self._store.query(self._read_due, "cannot read the alert outbox")
                for row in rows:
                    await self._attempt(session, row)
                await self._count_depth()
                if len(rows) == BATCH:
                    continue
                pause = await self._sleep_for()  # before the wait coroutine is made
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def _read_due(self, conn: aiosqlite.Connection) -> list[Due]:
        now_ms = round(self._clock.time() * 1000)
        return [_due(r) for r in await conn.execute_fetchall(DUE_SQL, (now_ms, BATCH))]

    async def _sleep_for(self) -> float:
        async def query(conn: aiosqlite.Connection) -> int | None:
            (row,) = await conn.execute_fetchall(
                "SELECT MIN(next_at_ms) FROM alert_outbox "
                "WHERE state = 'pending' AND channel = 'webhook'"
            )
            return None if row[0] is None else int(row[0])

        nearest = await self._store.query(query, "cannot read the alert outbox")
        if nearest is None:
            return POLL_S
        return min(POLL_S, max(0.0, nearest / 1000 - self._clock.time()))

    async def _count_depth(self) -> None:
        if self._metrics is None:
            return

        async def query(conn: aiosqlite.Connection) -> int:
            (row,) = await conn.execute_fetchall(
                "SELECT COUNT(*) FROM alert_outbox WHERE state = 'pending' AND channel = 'webhook'"
            )
            return int(row[0])

        self._metrics.outbox_depth.set(await self._store.query(query, "cannot count the outbox"))

    async def _attempt(self, session: aiohttp.ClientSession, row: Due) -> None:
        endpoint, now = row.endpoint, self._clock.time()
        if endpoint is None or endpoint.disabled_ms is not None:
            why = "endpoint deleted" if endpoint is None else "endpoint disabled (410)"
            await self._finish(row, "failed", why)
            return
        body = message("alert.fired", row.payload, row.fired_ms / 1000)
        headers = signed_headers(row.id, body, endpoint.signing_keys(round(now * 1000)), now)
        outcome = await send(session, self._policy, endpoint.url, body, headers, now=now)
        await self._settle(row, endpoint, outcome)

    async def _settle(self, row: Due, endpoint: Endpoint, outcome: Outcome) -> None:
        log.info(
            "webhook attempt",
            webhook_id=row.id,
            endpoint=endpoint.id,
            attempt=row.attempts + 1,
            delivered=outcome.delivered,
            status=outcome.status,
            error=outcome.error or None,
        )
        if outcome.delivered:
            await self._finish(row, "delivered", None)
            if self._metrics is not None:
                latency = max(0.0, self._clock.time() - row.fired_ms / 1000)
                self._metrics.delivery_latency.observe(latency)
        elif outcome.gone:
            await self._disable(row, endpoint)
        elif outcome.refused:
            await self._finish(row, "failed", outcome.error, outcome="refused")
        elif row.attempts + 1 >= self._max_attempts:
            await self._finish(row, "failed", f"gave up after {row.attempts + 1}: {outcome.error}")
        else:
            wait = backoff(
                row.attempts + 1,
                self._retry_base,
                self._retry_cap,
                self._rand,
                outcome.retry_after,
            )
            next_ms = round((self._clock.time() + wait) * 1000)
            await self._store.transact(
                lambda conn: conn.execute_fetchall(
                    "UPDATE alert_outbox SET attempts = attempts + 1, next_at_ms = ?, "
                    "last_error = ? WHERE id = ? AND state = 'pending'",
                    (next_ms, outcome.error[:300], row.id),
                ),
                "cannot reschedule a webhook",
            )
            self._count("retry")

    async def _finish(
        self, row: Due, state: str, error: str | None, *, outcome: str | None = None
    ) -> None:
        await self._store.transact(
            lambda conn: conn.execute_fetchall(
                "UPDATE alert_outbox SET state = ?, attempts = attempts + 1, last_error = ? "
                "WHERE id = ? AND state = 'pending'",
                (state, None if error is None else error[:300], row.id),
            ),
            "cannot record a webhook attempt",
        )
        self._count(outcome or state)

    async def _disable(self, row: Due, endpoint: Endpoint) -> None:
        now_ms = round(self._clock.time() * 1000)

        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute_fetchall(
                "UPDATE alert_endpoints SET disabled_ms = ? WHERE id = ? AND disabled_ms IS NULL",
                (now_ms, endpoint.id),
            )
            await conn.execute_fetchall(
                "UPDATE alert_outbox SET state = 'failed', attempts = attempts + 1, "
                "last_error = 'HTTP 410: endpoint disabled' WHERE id = ? AND state = 'pending'",
                (row.id,),
            )

        await self._store.transact(body, "cannot disable a webhook endpoint")
        log.warning("webhook endpoint disabled", endpoint=endpoint.id, reason="HTTP 410")
        self._count("gone")
        if self._metrics is not None:
            self._metrics.endpoints_disabled.inc()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(outcome).inc()
