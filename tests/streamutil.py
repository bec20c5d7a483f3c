"""Reading SSE streams in tests: whole frames, exactly as sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientResponse


async def frames(resp: ClientResponse, n: int, timeout: float = 5.0) -> list[bytes]:
    """The next ``n`` blank-line-terminated frames of an SSE body (after de-chunking)."""
    out = []
    async with asyncio.timeout(timeout):
        for _ in range(n):
            out.append(await resp.content.readuntil(b"\n\n"))
    return out


def parse(frame: bytes) -> tuple[str | None, str | None, Any]:
    """(id, event, data) of one frame our server wrote; comments give (None, None, text)."""
    ident = event = None
    data: Any = None
    for line in frame.decode().strip("\n").split("\n"):
        field, _, value = line.partition(": ")
        if field == "id":
            ident = value
        elif field == "event":
            event = value
        elif field == "data":
            data = json.loads(value)
        elif line.startswith(":"):
            data = line
    return ident, event, data


async def events(resp: ClientResponse, n: int, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    """The next ``n`` frames, parsed."""
    return [parse(f) for f in await frames(resp, n, timeout)]


class RecordingTransport:
    """A subscriber's socket for hub-level tests: keeps what is written, or raises ``fail``."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.fail: Exception | None = None

    def write(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass
