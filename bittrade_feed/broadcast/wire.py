"""Wire framing: one event as the exact bytes of each wire format, encoded once.

A tick becomes one ``bytes`` frame per wire format (SSE chunked, SSE raw for HTTP/1.0,
WebSocket), and the same objects are written to every subscriber of that format.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

from bittrade_feed.models import Tick


class WireFormat(enum.IntEnum):
    """How a subscriber's bytes are framed; the value indexes ``Frames``."""

    SSE_CHUNKED = 0
    """Server-Sent Events inside HTTP/1.1 chunks."""
    SSE_RAW = 1
    """Server-Sent Events on an HTTP/1.0 body (no chunk framing)."""
    WS = 2
    """WebSocket text frames."""

    @property
    def transport(self) -> str:
        """The ``transport`` label of this format's metrics."""
        return "ws" if self is WireFormat.WS else "sse"


FORMATS = tuple(WireFormat)

SSE_HELLO = b": hello\n"
"""The first line of an SSE body: sent at once with the headers, it opens the first block."""
SSE_HEARTBEAT = b": keep-alive\n\n"
WS_PING = b"\x89\x00"


def sse_frame(event: str, data: Any, event_id: int | str | None = None) -> bytes:
    """One SSE event; compact JSON contains no newline, so one ``data:`` line suffices.

    ``event_id=""`` sends an empty ``id:`` line, which clears the client's resume point.
    """
    head = "" if event_id is None else f"id: {event_id}\n" if event_id != "" else "id:\n"
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


def ws_message(event: str, data: Any) -> bytes:
    """The WebSocket text payload: the same JSON, with the event type inside."""
    return json.dumps(
        {"event": event, "data": data}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final text frame, as a server sends it (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def chunk(frame: bytes) -> bytes:
    """Frame bytes as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``)."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


Frames = tuple[bytes, bytes, bytes]
"""One event in every wire format, indexed by ``WireFormat``."""


def encode(event: str, data: Any, event_id: int | str | None = None) -> Frames:
    """One event in every wire format, indexed by ``WireFormat``."""
    sse = sse_frame(event, data, event_id)
    return chunk(sse), sse, ws_frame(ws_message(event, data))


def encode_for(event: str, data: Any, fmt: WireFormat) -> bytes:
    """One event (without an id) in one wire format: for bytes only one subscriber gets."""
    if fmt is WireFormat.WS:
        return ws_frame(ws_message(event, data))
    sse = sse_frame(event, data)
    return chunk(sse) if fmt is WireFormat.SSE_CHUNKED else sse


def price_frames(tick: Tick) -> Frames:
    """A tick as a ``price`` event carrying its id."""
    return encode("price", tick.to_json(), tick.id)


def join(items: list[Frames]) -> Frames:
    """Several events as one write per format (chunks and WS frames concatenate)."""
    return (
        b"".join(f[WireFormat.SSE_CHUNKED] for f in items),
        b"".join(f[WireFormat.SSE_RAW] for f in items),
        b"".join(f[WireFormat.WS] for f in items),
    )


def retry_frames(retry_ms: int) -> Frames:
    """The SSE ``retry:`` line, unterminated: it opens the block of the first event.

    A block holding only a retry dispatches nothing (WHATWG), and some clients then try
    to parse an empty data field. WebSocket has no retry.
    """
    line = b"retry: %d\n" % retry_ms
    return chunk(line), line, b""


BLOCK_END: Frames = (chunk(b"\n"), b"\n", b"")
"""Ends an SSE block that carries no event (only the retry line)."""

HEARTBEATS: Frames = (chunk(SSE_HEARTBEAT), SSE_HEARTBEAT, WS_PING)
"""The keep-alive of each format: an SSE comment, a WebSocket ping."""
