"""The blocking facade for scripts: ``for tick in subscribe(url): ...``.

The async ``FeedClient`` runs on an event loop in a background thread; each step of the
iteration hands one ``__anext__`` to that loop and waits for it. Nothing is buffered on
this side, so a slow script slows the reader exactly as the async iterator would.
Leaving the loop (``break``, an exception, Ctrl-C) closes the connection and joins the
thread before control returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future, InvalidStateError
from typing import Any, TypedDict, TypeVar, Unpack

import aiohttp

from bittrade_feed_client.client import FeedClient, StateCallback
from bittrade_feed_client.credentials import TokenProvider
from bittrade_feed_client.models import Tick

T = TypeVar("T")

CLOSE_TIMEOUT = 5.0
"""Seconds to wait for the connection to close when the caller stops iterating."""


class Options(TypedDict, total=False):
    """``FeedClient``'s keyword arguments, as ``subscribe`` passes them on."""

    api_key: str | None
    token_provider: TokenProvider | None
    idle_timeout: float
    connect_timeout: float
    reconnect_delay: float
    max_delay: float
    max_attempts: int | None
    last_event_id: int | None
    on_state: StateCallback | None
    session: aiohttp.ClientSession | None
    buffer: int


def subscribe(
    url: str,
    pairs: Iterable[str] | None = None,
    token: str | None = None,
    **options: Unpack[Options],
) -> Iterator[Tick]:
    """Yield every tick of the feed, reconnecting as ``FeedClient`` does.

    ``options`` are ``FeedClient``'s keyword arguments; an ``on_state`` callback runs
    on the background thread, and so does a ``token_provider``. Permanent errors
    (``AuthError``, ``ForbiddenError``, ``RequestRejected``,
    ...) are raised from the loop; a 204 from the daemon ends it.
    """
    feed = FeedClient(url, pairs, token, **options)
    loop = _LoopThread()
    try:
        loop.run(lambda: _enter(feed))
        while True:
            tick = loop.run(lambda: _next(feed))
            if tick is None:
                return
            yield tick
    finally:
        try:
            # A hung close must not replace the exception that ended the loop.
            with contextlib.suppress(TimeoutError):
                loop.run(feed.aclose, timeout=CLOSE_TIMEOUT)
        finally:
            loop.stop()


async def _enter(feed: FeedClient) -> None:
    feed.__aiter__()
    feed.start()


async def _next(feed: FeedClient) -> Tick | None:
    # StopAsyncIteration must not cross into a concurrent Future: return None instead.
    try:
        return await feed.__anext__()
    except StopAsyncIteration:
        return None


class _LoopThread:
    """An event loop running in a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bittrade-feed-client", daemon=True
        )
        self.thread.start()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run ``make()`` on the loop and wait; interrupting the wait cancels it.

        The coroutine is made on the loop's thread, not here: made here, a Ctrl-C landing
        between making it and handing it over would drop it unrun, and Python would warn
        "coroutine ... was never awaited" as the script exits.
        """
        future: Future[T] = Future()

        def start() -> None:
            if future.cancelled():
                return  # the caller stopped waiting before the loop got here: make nothing
            task = self.loop.create_task(make())
            task.add_done_callback(lambda done: _settle(future, done))

            def cancel_task(waited: Future[T]) -> None:
                # Runs on whichever thread cancelled the future; the task is the loop's.
                if waited.cancelled():
                    self.loop.call_soon_threadsafe(task.cancel)

            future.add_done_callback(cancel_task)

        self.loop.call_soon_threadsafe(start)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Cancel what still runs, stop the loop, join the thread and close the loop."""
        with contextlib.suppress(TimeoutError):
            self.run(_cancel_others, timeout=CLOSE_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def _settle(future: Future[T], task: asyncio.Task[T]) -> None:
    """Pass the task's outcome to the waiting caller, unless it has stopped waiting."""
    # The caller may cancel between the check and the set: that race is settled by the
    # future itself, which refuses the second outcome.
    with contextlib.suppress(InvalidStateError):
        if future.cancelled():
            return
        if task.cancelled():
            future.cancel()
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())


async def _cancel_others() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
