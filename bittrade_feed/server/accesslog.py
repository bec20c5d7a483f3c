"""An access log that cannot leak a credential: no query string, no header, no cookie.

aiohttp's default format starts with ``%r``, the request line *with its query*, where a
stream ticket travels; its format language can also print any header (``%{Authorization}i``).
This logger writes a fixed set of fields and the path alone.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

ACCESS_LOGGER = logging.getLogger("aiohttp.access")


class SafeAccessLogger(AbstractAccessLogger):
    """``<peer> "<METHOD> <path>" <status> <bytes> <seconds>``; never the query or headers."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write one line for a finished request."""
        self.logger.info(
            '%s "%s %s" %d %d %.3f',
            request.remote,
            request.method,
            request.rel_url.raw_path,  # percent-encoded: no newline can forge a line
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        """Skip the work when the line would be dropped (the default: warning and above)."""
        return self.logger.isEnabledFor(logging.INFO)


def runner_options() -> dict[str, Any]:
    """The ``AppRunner`` keyword arguments that install the safe access log."""
    return {"access_log_class": SafeAccessLogger, "access_log": ACCESS_LOGGER}
