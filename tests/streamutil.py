"""Reading SSE streams in tests: whole frames, exactly as sent, over HTTP or a bare socket."""

from __future__ import annotations

import asyncio
import json
import socket
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


class Peer:
    """One end of a loopback TCP connection: the hub writes to ``transport``, we read."""

    def __init__(
        self,
        transport: asyncio.Transport,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.transport = transport
        self.reader = reader
        self._writer = writer

    def stall(self) -> None:
        """Stop reading, as a client that stopped consuming the stream."""
        self._writer.transport.pause_reading()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close both ends without reading what is left."""
        self.transport.close()
        self._writer.close()

    async def received(self, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        """Close our side's writer and parse every SSE frame the hub wrote (raw format)."""
        self.transport.close()
        async with asyncio.timeout(timeout):
            data = await self.reader.read()
        self._writer.close()
        return [parse(f + b"\n\n") for f in data.split(b"\n\n") if f]


async def loopback_peers(n: int, rcvbuf: int = 0) -> list[Peer]:
    """``n`` real loopback connections, each given as the server-side transport and a reader.

    ``rcvbuf`` shrinks the reading side's kernel buffer, so a peer that does not read
    leaves the bytes unsent on the hub's side.
    """
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peers = []
    for _ in range(n):
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        server_side = await accepted.get()
        transport = server_side.transport
        assert isinstance(transport, asyncio.Transport)
        peers.append(Peer(transport, reader, writer))
    server.close()
    return peers
