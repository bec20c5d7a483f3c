"""One SQLite connection on its own thread, with a deadline on every call.

Each call is one synchronous function run to its end on the connection's thread, so a
caller that gives up (timeout, cancellation) can never leave half a transaction behind:
the function either never starts (it is skipped) or runs to completion (its own
``finally`` commits or rolls back). A call that outlives its deadline is interrupted
with ``sqlite3.Connection.interrupt`` (thread-safe) and its caller gets ``StoreTimeout``
at once; the thread is not waited for.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Generic, TypeVar

from bittrade_feed.errors import StoreError, StoreTimeout

T = TypeVar("T")


@dataclass(slots=True)
class Call(Generic[T]):
    """One queued function and what its caller and the thread know about it."""

    fn: Callable[[sqlite3.Connection, Call[T]], T]
    deadline: float
    """``time.monotonic()`` after which the caller no longer waits."""
    future: asyncio.Future[T]
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False
    finished: bool = False
    abandoned: bool = False

    def given_up(self) -> bool:
        """Whether the caller stopped waiting (a long call checks this between steps)."""
        return self.abandoned or time.monotonic() >= self.deadline


_STOP = object()


class Worker:
    """A connection owned by one daemon thread; ``call`` runs a function on it."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._queue: SimpleQueue[Call[object] | object] = SimpleQueue()
        self._conn = connect()
        self.name = name
        self.running_since: float | None = None
        """``time.monotonic()`` when the call now on the thread began (``None``: idle)."""
        # A daemon thread: a call stuck in the kernel (frozen filesystem) must not keep
        # the process from exiting.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._conn.close()
                return
            assert isinstance(item, Call)
            self._run(item)

    def _run(self, call: Call[object]) -> None:
        with call.lock:
            if call.abandoned:
                return
            call.started = True
        self.running_since = time.monotonic()
        try:
            result = call.fn(self._conn, call)
        except BaseException as exc:  # handed to the awaiting caller
            outcome: tuple[bool, object] = (False, exc)
        else:
            outcome = (True, result)
        finally:
            self.running_since = None
            with call.lock:
                call.finished = True
        loop = call.future.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(_settle, call, outcome)

    async def call(
        self, fn: Callable[[sqlite3.Connection, Call[T]], T], timeout: float, what: str
    ) -> T:
        """Run ``fn(conn, call)`` on the thread; ``StoreError`` naming ``what`` on failure."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        call = Call(fn, time.monotonic() + timeout, future)
        self._queue.put(call)
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
        except BaseException:
            self._abandon(call, interrupt=False)
            if future.done() and not future.cancelled():
                future.exception()  # settled just before the cancel: nobody will read it
            raise
        if not done:
            self._abandon(call, interrupt=True)
            raise StoreTimeout(f"{what}: no answer from the database within {timeout:g} s")
        try:
            return future.result()
        except sqlite3.Error as exc:
            raise StoreError(f"{what}: {exc}") from exc

    def _abandon(self, call: Call[T], *, interrupt: bool) -> None:
        with call.lock:
            call.abandoned = True
            # Under the lock the thread cannot move on to the next call, so the
            # interrupt can only hit this one.
            if interrupt and call.started and not call.finished:
                self._conn.interrupt()

    async def close(self, timeout: float) -> None:
        """Close the connection after the calls already queued, waiting at most ``timeout``."""
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout)


def _settle(call: Call[T], outcome: tuple[bool, object]) -> None:
    future = call.future
    # Nobody awaits an abandoned call: setting its exception would only warn.
    if future.done() or call.abandoned:
        return
    ok, value = outcome
    if ok:
        future.set_result(value)  # type: ignore[arg-type]
    else:
        assert isinstance(value, BaseException)
        future.set_exception(value)
