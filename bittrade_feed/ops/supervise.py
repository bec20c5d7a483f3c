"""One place that runs every background task, so none can fail unseen.

A task started here that raises (or ends, for loops that must run for ever) is logged
once with its name and counted in ``bittrade_feed_task_crashes_total{task=...}``. Then
either it is restarted after a backoff (loops that are safe to restart: heartbeats,
retention, sd_notify) or it is fatal: the supervisor records why, ``/healthz`` turns
503, and ``on_fatal`` (the CLI's stop with exit 1) runs. Callbacks the event loop calls
(the hub's coalescing flush) go through ``call``, which reports a raise as fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import Counter

log = structlog.get_logger("bittrade_feed.ops.supervise")

FIRST_BACKOFF = 1.0
"""Seconds before the first restart of a crashed loop; doubles up to ``MAX_BACKOFF``."""
MAX_BACKOFF = 60.0
HEALTHY_RUN = 60.0
"""A loop that ran this long before crashing restarts after the first backoff again."""

Sleep = Callable[[float], Awaitable[None]]


class Supervisor:
    """Starts background tasks, restarts or escalates their crashes, and stops them all."""

    def __init__(
        self,
        crashes: Counter,
        sleep: Sleep,
        monotonic: Callable[[], float],
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.crashes = crashes
        self.sleep = sleep
        self.monotonic = monotonic
        self.on_fatal = on_fatal
        self.failed: str | None = None
        """Why the daemon cannot go on (a fatal crash), or ``None`` while all is well."""
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(
        self, name: str, run: Callable[[], Awaitable[None]], *, restart: bool
    ) -> asyncio.Task[None]:
        """Run ``run()`` as task ``name``; a crash restarts it (``restart``) or is fatal."""
        self.crashes.labels(name)  # the series exists (at 0) before any crash
        task = asyncio.create_task(self._guard(name, run, restart), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def call(self, name: str, callback: Callable[[], None]) -> None:
        """Run an event-loop callback; a raise is fatal (the events it carried are lost)."""
        try:
            callback()
        except Exception as exc:
            self._crashed(name, exc)
            self._fail(name, exc)

    async def cancel(self, task: asyncio.Task[None]) -> None:
        """Stop one task started here and wait for it."""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        """Stop every task still running."""
        for task in list(self._tasks):
            await self.cancel(task)

    async def _guard(self, name: str, run: Callable[[], Awaitable[None]], restart: bool) -> None:
        backoff = FIRST_BACKOFF
        while True:
            started = self.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error: BaseException = exc
            else:
                error = RuntimeError("ended on its own")
            self._crashed(name, error)
            if not restart:
                self._fail(name, error)
                return
            if self.monotonic() - started >= HEALTHY_RUN:
                backoff = FIRST_BACKOFF
            log.warning("restarting task", task=name, in_s=backoff)
            await self.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _crashed(self, name: str, exc: BaseException) -> None:
        self.crashes.labels(name).inc()
        log.error("task crashed", task=name, reason=f"{type(exc).__name__}: {exc}", exc_info=exc)

    def _fail(self, name: str, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = f"task {name} crashed: {type(exc).__name__}: {exc}"
        if self.on_fatal is not None:
            self.on_fatal(self.failed)
