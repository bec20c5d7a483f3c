"""Blocking reads of the alert streams (``fired``, ``rule-changes``) from a position.

``"$"`` is resolved to the stream's current last id before the read, and that concrete id
is what the caller gets back when nothing arrived: passing ``"$"`` again would skip any
entry added between two calls.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bittrade_feed.alerts.redis.calls import call

BATCH = 500
"""Entries one read returns at most."""


async def follow(
    reader: Redis, stream: str, last: str, block_ms: int
) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    """Entries of ``stream`` after ``last`` (waiting up to ``block_ms``), and the new position."""
    if last == "$":
        last = await _end(reader, stream)
    reply: Any = await call(
        reader.xread({stream: last}, count=BATCH, block=max(1, block_ms)), f"cannot read {stream}"
    )
    entries: list[tuple[str, dict[str, str]]] = []
    if reply:
        streams = reply.items() if isinstance(reply, dict) else reply
        for _name, got in streams:
            for entry_id, fields in got:
                entries.append((str(entry_id), dict(fields)))
    return (entries[-1][0] if entries else last), entries


async def _end(reader: Redis, stream: str) -> str:
    """The id of the stream's newest entry (``0-0`` if it has none yet)."""
    newest: Any = await call(reader.xrevrange(stream, count=1), f"cannot read {stream}")
    return str(newest[0][0]) if newest else "0-0"
