"""One aiosqlite connection whose jobs run one at a time, each to its end, with a deadline.

A job is an async function of several awaited aiosqlite calls (a whole transaction). It
runs as its own task holding the lane's lock for its whole life, and its caller only
waits on that task. So a caller that gives up (timeout, cancellation) only stops
waiting: the job still commits or rolls back, and the next job's statements can never
interleave with its own. When the deadline passes while the job owns the connection,
its running statement is interrupted (aiosqlite's ``Connection.interrupt`` calls
sqlite3's thread-safe interrupt directly, not through the queue) and the caller gets
``StoreTimeout`` at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bittrade_feed.errors import StoreError, StoreTimeout

T = TypeVar("T")

INTERRUPT_EVERY = 0.01
"""Seconds between two interrupts of a job whose caller's deadline has passed."""


@dataclass(slots=True)
class Job:
    """What a job knows about its caller: the connection, and whether it still waits."""

    conn: aiosqlite.Connection
    deadline: float
    """``time.monotonic()`` after which the caller no longer waits."""
    abandoned: bool = False

    def given_up(self) -> bool:
        """Whether the caller stopped waiting (a job checks this before it starts writing)."""
        return self.abandoned or time.monotonic() >= self.deadline


def _named(name: str, threads: list[threading.Thread]) -> type[sqlite3.Connection]:
    """A sqlite3 connection class that names the thread it is made on and remembers it."""

    class Named(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # aiosqlite makes the connection on its own thread: name it for ps and py-spy.
            thread = threading.current_thread()
            thread.name = name
            threads.append(thread)

    return Named


def _on_daemon_thread(make: Callable[[], T]) -> T:
    """``make()`` called on a short-lived daemon thread."""
    made: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            made.append(make())
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    helper = threading.Thread(target=target, name="db-open", daemon=True)
    helper.start()
    helper.join()
    if failed:
        raise failed[0]
    return made[0]


class Lane:
    """An aiosqlite connection on a named daemon thread; ``run`` runs one job on it."""

    def __init__(self, conn: aiosqlite.Connection, thread: threading.Thread) -> None:
        self.conn = conn
        self.thread = thread
        """The connection's thread (a daemon: a call stuck in the kernel cannot block exit)."""
        self.running_since: float | None = None
        """``time.monotonic()`` when the job that owns the connection began (``None``: idle)."""
        self._lock = asyncio.Lock()
        self._owner: Job | None = None
        self._jobs: set[asyncio.Task[Any]] = set()
        self._interrupters: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, path: Path, name: str, setup: Sequence[str]) -> Lane:
        """Connect to ``path`` on a thread called ``name`` and run the ``setup`` statements."""
        threads: list[threading.Thread] = []
        # A thread inherits daemon status from the thread that creates it, and aiosqlite
        # creates its thread with the Connection (0.20 to 0.22): create it from a daemon.
        conn = _on_daemon_thread(
            lambda: aiosqlite.connect(path, isolation_level=None, factory=_named(name, threads))
        )
        await conn
        lane = cls(conn, threads[0])
        try:
            for sql in setup:
                await conn.execute_fetchall(sql)
        except BaseException:
            await lane.close(1.0)
            raise
        return lane

    async def run(self, fn: Callable[[Job], Awaitable[T]], timeout: float, what: str) -> T:
        """Run ``fn(job)`` as its own task; ``StoreError`` naming ``what`` on failure."""
        job = Job(self.conn, time.monotonic() + timeout)
        task = asyncio.create_task(self._own(fn, job))
        self._jobs.add(task)
        task.add_done_callback(self._done)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except BaseException:
            job.abandoned = True  # the job goes on to its end; nobody reads its outcome
            raise
        if not done:
            job.abandoned = True
            if self._owner is job:
                interrupter = asyncio.create_task(self._interrupt(job))
                self._interrupters.add(interrupter)
                interrupter.add_done_callback(self._interrupters.discard)
            raise StoreTimeout(f"{what}: no answer from the database within {timeout:g} s")
        try:
            return task.result()
        except sqlite3.Error as exc:
            raise StoreError(f"{what}: {exc}") from exc

    async def _interrupt(self, job: Job) -> None:
        # SQLite drops an interrupt that lands between two statements, and a job's
        # statements are a queue hop apart: repeat it until the job lets go. interrupt()
        # never suspends, so after the check the job still owns the connection and the
        # interrupt can only hit one of its statements.
        while self._owner is job:
            await self.conn.interrupt()
            await asyncio.sleep(INTERRUPT_EVERY)

    async def _own(self, fn: Callable[[Job], Awaitable[T]], job: Job) -> T:
        async with self._lock:
            if job.given_up():
                # The connection came free after the caller stopped waiting: do nothing
                # behind its back (the outcome stays known).
                raise StoreTimeout("the caller gave up before the job began")
            self._owner, self.running_since = job, time.monotonic()
            try:
                return await fn(job)
            finally:
                self._owner, self.running_since = None, None

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled():
            task.exception()  # an abandoned job's error: retrieved, so asyncio does not warn

    async def close(self, timeout: float) -> None:
        """Close the connection after the jobs already running, waiting at most ``timeout``."""
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=timeout)
        if self._jobs:
            # A job stuck below SQLite (a frozen disk) holds the thread: closing would
            # queue behind it. The daemon thread ends with the process, and SQLite rolls
            # the open transaction back when the database is next opened.
            return
        closing = asyncio.ensure_future(self.conn.close())
        await asyncio.wait({closing}, timeout=timeout)
        for _ in range(3):
            # Not closed in time: cancel the close (aiosqlite may await once more in its
            # own cleanup), so no task is left to hold up the event loop's shutdown.
            if closing.done():
                break
            closing.cancel()
            await asyncio.sleep(0)
        if closing.done() and not closing.cancelled():
            closing.exception()
