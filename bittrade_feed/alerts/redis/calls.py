"""Redis failures as the ``StoreError`` types the REST layer and the engine already handle.

A Redis that does not answer is ``ClusterUnavailable`` (503 at the REST layer, retried by
the engine and the outbox worker, exactly like a database fault on one daemon); a script
that refused a stale leader is ``Fenced``. The outcome of a write whose reply was lost is
unknown, as with ``StoreTimeout``: every write here is safe to repeat or to leave.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from bittrade_feed.cluster.errors import ClusterUnavailable, Fenced
from bittrade_feed.cluster.scripts import FENCED


async def call(pending: Awaitable[Any], what: str) -> Any:
    """The reply of one Redis command or script; ``what`` names it in the error."""
    try:
        return await pending
    except ResponseError as exc:
        if str(exc).startswith(FENCED):
            raise Fenced(f"{what}: {exc}") from None
        raise ClusterUnavailable(f"{what}: Redis refused: {exc}") from None
    except (RedisError, OSError) as exc:
        raise ClusterUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
