"""Bad input from clients is answered, counted and logged in one short, rate-limited line.

aiohttp answers a request it cannot parse (a line or header over 8190 bytes, a broken
request line) with 400 itself, but logs each with a full traceback at error level: one
client could fill the journal. A filter on its ``aiohttp.server`` logger turns those into
one warning line with the peer and the reason, at most ``LINES_PER_MINUTE`` a minute
(shared with bad WebSocket messages), and counts every one in a metric.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bittrade_feed.ops.logs import RateLimitedLog
from bittrade_feed.ops.metrics import Metrics
from bittrade_feed.server.state import METRICS

LINES_PER_MINUTE = 10
REASON_CHARS = 120
"""A parser's reason quotes the bad line; this much of it is enough to recognise it."""

BAD_INPUT_LOG = web.AppKey("bad_input_log", RateLimitedLog)

log = structlog.get_logger("bittrade_feed.server.badinput")


def install(app: web.Application) -> None:
    """Give ``app`` its bad-input log and the aiohttp log filter for its lifetime."""
    app[BAD_INPUT_LOG] = RateLimitedLog(LINES_PER_MINUTE)
    app.cleanup_ctx.append(_filter_ctx)


def note_bad_message(app: web.Application, peer: object, reason: str) -> None:
    """Log one bad WebSocket message, unless the minute's lines are used up."""
    held_back = app[BAD_INPUT_LOG].allow()
    if held_back is not None:
        log.warning("bad websocket message", peer=str(peer), reason=reason, held_back=held_back)


class BadRequestFilter(logging.Filter):
    """Rewrites aiohttp's traceback for an unparsable request into one warning line."""

    def __init__(self, limit: RateLimitedLog, metrics: Metrics) -> None:
        super().__init__("aiohttp.server")
        self.limit = limit
        self.metrics = metrics

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep other records as they are; shorten, count and rate-limit parse errors."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.metrics.bad_requests.inc()
        held_back = self.limit.allow()
        if held_back is None:
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "unknown"
        reason = " ".join(str(exc.message or type(exc).__name__).split())[:REASON_CHARS]
        record.msg = "malformed request from %s answered 400: %s (%d similar lines held back)"
        record.args = (peer, reason, held_back)
        record.exc_info = record.exc_text = None
        # aiohttp logs a non-HTTP first line (a TLS hello, a port scan) at debug: keep that.
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


async def _filter_ctx(app: web.Application) -> AsyncIterator[None]:
    logger = logging.getLogger("aiohttp.server")
    bad_requests = BadRequestFilter(app[BAD_INPUT_LOG], app[METRICS])
    logger.addFilter(bad_requests)
    yield
    logger.removeFilter(bad_requests)
