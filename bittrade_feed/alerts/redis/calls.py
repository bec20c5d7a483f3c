"""Redis failures as the ``StoreError`` types the REST layer and the engine already handle.

A Redis that does not answer is ``ClusterUnavailable`` (503 at the REST layer, retried by
the engine and the outbox worker, exactly like a database fault on one daemon); a script
that refused a stale leader is ``Fenced``. The outcome of a write whose reply was lost is
unknown, as with ``StoreTimeout``: every write here is safe to repeat or to leave.

redis-py (8.x, asyncio) sometimes finishes a command and returns its reply, or raises a
``TimeoutError``, after the calling task was cancelled, so the cancellation is lost and
a supervised task being stopped runs on (``cluster.node`` cancels in a loop for the same
reason). ``call`` re-raises ``CancelledError`` when a cancel arrived during the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from bittrade_feed.cluster.errors import ClusterUnavailable, Fenced
from bittrade_feed.cluster.scripts import FENCED


async def call(pending: Awaitable[Any], what: str) -> Any:
    """The reply of one Redis command or script; ``what`` names it in the error."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        reply = await pending
    except ResponseError as exc:
        _raise_if_cancelled(task, cancels)
        if str(exc).startswith(FENCED):
            raise Fenced(f"{what}: {exc}") from None
        raise ClusterUnavailable(f"{what}: Redis refused: {exc}") from None
    except (RedisError, OSError) as exc:
        _raise_if_cancelled(task, cancels)
        raise ClusterUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
    _raise_if_cancelled(task, cancels)
    return reply


def _raise_if_cancelled(task: asyncio.Task[Any] | None, before: int) -> None:
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
