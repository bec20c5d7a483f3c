"""The daemon's app served from its own thread, for synchronous (hypothesis) tests.

Hypothesis runs each example as a plain function call, so the server cannot live on the
test's event loop; it gets a loop and a thread of its own, and the examples talk to it
over loopback like any client. Logs are captured from every logger, structlog included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.test_utils import unused_port

from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from tests.fakeclock import FakeClock

T = TypeVar("T")


class ServedApp:
    """``create_app(config)`` on 127.0.0.1 in a background thread; ``close()`` ends both."""

    def __init__(self, config: Config) -> None:
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = create_app(config, clock=self.clock, fetch=False)
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        self.port = unused_port()
        self.run(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        """Stop serving and end the thread."""
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Every log record (structlog's too, routed to stdlib) while the block runs."""
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    """The records that are errors or carry a traceback, rendered for a failure message."""
    return [
        f"{r.name} {r.levelname}: {r.getMessage()[:200]}"
        for r in records
        if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
    ]
