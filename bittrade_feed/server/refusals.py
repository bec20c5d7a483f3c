"""Refused requests, counted by reason and logged in one short, rate-limited line each.

Every refusal before a request is served goes through ``note_refusal``: 401s and 403s of
the auth layer, the stream limits, the WebSocket Origin check. A client that hammers one
would otherwise write a line per attempt; ``bittrade_feed_refusals_total{reason}`` still
counts every one.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from bittrade_feed.ops.logs import RateLimitedLog
from bittrade_feed.server.address import client_address
from bittrade_feed.server.state import CLOCK, METRICS

LINES_PER_MINUTE = 10
REFUSALS_LOG = web.AppKey("refusals_log", RateLimitedLog)

log = structlog.get_logger("bittrade_feed.server.refusals")


def install(app: web.Application) -> None:
    """Give ``app`` its refusal log (after ``CLOCK`` is set)."""
    app[REFUSALS_LOG] = RateLimitedLog(LINES_PER_MINUTE, app[CLOCK].monotonic)


def note_refusal(request: web.Request, reason: str, why: str) -> None:
    """Count a refusal under ``reason`` (a ``REFUSAL_REASONS`` word) and maybe log it."""
    request.app[METRICS].refusals.labels(reason).inc()
    held_back = request.app[REFUSALS_LOG].allow()
    if held_back is not None:
        # The path only: a query may hold a ticket, and no header is logged.
        log.warning(
            "request refused",
            refusal=reason,
            why=why,
            path=request.path,
            peer=client_address(request),
            held_back=held_back,
        )
