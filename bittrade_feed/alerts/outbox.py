"""The webhook outbox worker: delivers the outbox's webhook rows, at least once.

The rows are read and written through ``backend.OutboxBackend``: SQLite on one daemon
(``deliveries.OutboxStore``), Redis in a cluster.

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
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress

import aiohttp
import structlog

from bittrade_feed.alerts.backend import Due, OutboxBackend
from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.ssrf import Policy
from bittrade_feed.alerts.webhook import Outcome, body_for, send, signed_headers
from bittrade_feed.clock import Clock
from bittrade_feed.ops.metrics import AlertMetrics

__all__ = ["BATCH", "POLL_S", "Due", "OutboxWorker", "backoff"]

log = structlog.get_logger("bittrade_feed.alerts.outbox")

BATCH = 50
"""Due rows read at once."""
POLL_S = 5.0
"""Longest sleep between looks at the outbox (new rows also wake the worker)."""
MAX_ERROR = 300
"""Characters of an attempt's error kept in the row."""

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


class OutboxWorker:
    """Sends due webhook rows until cancelled; ``poke`` when new rows were committed."""

    def __init__(
        self,
        rows: OutboxBackend,
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
        self._rows = rows
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
                now_ms = round(self._clock.time() * 1000)
                rows = await self._rows.due(now_ms, BATCH)
                for row in rows:
                    await self._attempt(session, row)
                await self._count_depth()
                if len(rows) == BATCH:
                    continue
                pause = await self._sleep_for()  # before the wait coroutine is made
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)

    async def _sleep_for(self) -> float:
        nearest = await self._rows.nearest_due_ms()
        if nearest is None:
            return POLL_S
        return min(POLL_S, max(0.0, nearest / 1000 - self._clock.time()))

    async def _count_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.outbox_depth.set(await self._rows.depth())

    async def _attempt(self, session: aiohttp.ClientSession, row: Due) -> None:
        endpoint, now = row.endpoint, self._clock.time()
        if endpoint is None or endpoint.disabled_ms is not None:
            why = "endpoint deleted" if endpoint is None else "endpoint disabled (410)"
            await self._finish(row, "failed", why)
            return
        body = body_for(endpoint.format, "alert.fired", row.payload, row.fired_ms / 1000, row.id)
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
            await self._rows.reschedule(row.id, next_ms, outcome.error[:MAX_ERROR])
            self._count("retry")

    async def _finish(
        self, row: Due, state: str, error: str | None, *, outcome: str | None = None
    ) -> None:
        await self._rows.finish(row.id, state, None if error is None else error[:MAX_ERROR])
        self._count(outcome or state)

    async def _disable(self, row: Due, endpoint: Endpoint) -> None:
        await self._rows.disable(row.id, endpoint.id, round(self._clock.time() * 1000))
        log.warning("webhook endpoint disabled", endpoint=endpoint.id, reason="HTTP 410")
        self._count("gone")
        if self._metrics is not None:
            self._metrics.endpoints_disabled.inc()

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.deliveries.labels(outcome).inc()
