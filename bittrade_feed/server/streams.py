"""The stream endpoints: SSE at ``/api/price-stream`` and WebSocket at ``/api/ws``.

Handlers only validate the request, send the headers and hand the socket to the hub;
from then on every byte the subscriber receives is written by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11

from bittrade_feed.broadcast.hub import SSE_CHUNKED, SSE_RAW, WS, Hub, Subscriber
from bittrade_feed.config import Config
from bittrade_feed.server.problems import Problem, handles_own_problems, problem_response
from bittrade_feed.server.state import HUB, current_config

MAX_WS_MESSAGE = 4096

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    # nginx buffers proxied responses unless told not to; an event stream must not wait.
    "X-Accel-Buffering": "no",
}


def _app_state(request: web.Request) -> tuple[Hub, Config]:
    return request.app[HUB], current_config(request.app)


def requested_pairs(request: web.Request, param: str, *, single: bool = False) -> tuple[str, ...]:
    """The pairs named in ``?pairs=`` / ``?pair=`` (default: every configured pair)."""
    _, config = _app_state(request)
    known = config.fetch.pairs
    raw = request.query.get(param, "")
    if not raw:
        return known[:1] if single else known
    return check_pairs(raw.split(","), known, param, single=single)


def check_pairs(
    names: list[Any], known: tuple[str, ...], param: str, *, single: bool = False
) -> tuple[str, ...]:
    """Validate pair names against the configured ones; ``Problem`` 400 naming the bad one."""
    if single and len(names) != 1:
        raise Problem(400, f"{param} takes exactly one pair", param=param)
    pairs: list[str] = []
    for name in names:
        pair = str(name).strip().upper()
        if pair not in known:
            raise Problem(
                400,
                f"unknown pair {str(name)!r} in {param}: this feed serves {', '.join(known)}",
                param=param,
            )
        if pair not in pairs:
            pairs.append(pair)
    return tuple(pairs)


def last_event_id(request: web.Request) -> int | None:
    """The resume point: ``Last-Event-ID`` header, else ``?last_event_id=``."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    return parse_event_id(raw, "Last-Event-ID")


def parse_event_id(raw: Any, name: str) -> int | None:
    """An event id is a non-negative integer; empty means "none"."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit() or len(text) > 18:
        raise Problem(400, f"{name} {raw!r} is not an event id (a whole number)", param=name)
    return int(text)


def _refuse_if_full(hub: Hub, transport: str) -> None:
    if hub.full():
        hub.metrics.connections_closed.labels(transport, "limit").inc()
        # A spread of Retry-After values keeps refused clients from returning in one wave.
        raise Problem(
            503,
            f"subscriber limit reached ({hub.config.max_subscribers}); retry later",
            headers={"Retry-After": str(random.randint(2, 10))},
        )


def _admit(request: web.Request, hub: Hub, transport: str) -> tuple[tuple[str, ...], int | None]:
    """The stream's pairs and resume point; ``Problem`` if the request or the limit says no."""
    pairs = requested_pairs(request, "pairs")
    resume = last_event_id(request)
    _refuse_if_full(hub, transport)
    return pairs, resume


@handles_own_problems
async def price_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: snapshot or replay, then every price and status as it happens."""
    hub, config = _app_state(request)
    try:
        pairs, resume = _admit(request, hub, "sse")
    except Problem as problem:
        return problem_response(problem)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    http11 = request.version >= HttpVersion11
    if http11:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    # The first write goes through aiohttp so the headers leave with it; afterwards
    # the hub writes whole pre-framed chunks straight to the transport.
    await resp.write(b"retry: %d\n\n" % config.stream.retry_ms)
    transport = request.transport
    if transport is None or transport.is_closing():
        return resp
    sub = await hub.subscribe(transport, SSE_CHUNKED if http11 else SSE_RAW, pairs, resume)
    try:
        await sub.done
    finally:
        hub.detach(sub)
    return resp


@handles_own_problems
async def ws_stream(request: web.Request) -> web.StreamResponse:
    """WebSocket: the same events as JSON ``{"event": ..., "data": ...}`` text messages.

    The client may send ``{"op": "subscribe", "pairs": [...], "last_event_id": N}`` to
    change its pairs and resume point.
    """
    hub, config = _app_state(request)
    try:
        pairs, resume = _admit(request, hub, "ws")
    except Problem as problem:
        return problem_response(problem)
    # Compression off: frames are pre-encoded once for every subscriber.
    ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_WS_MESSAGE, autoping=True)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    sub = await hub.subscribe(transport, WS, pairs, resume)
    try:
        while True:
            sub = await _serve_ws_message(ws, hub, sub, config.fetch.pairs)
            if sub.done.done():
                break
    finally:
        hub.detach(sub)
        if not ws.closed:
            reason = sub.done.result() if sub.done.done() else "client"
            with contextlib.suppress(ConnectionError):
                await ws.close(code=1001, message=reason.encode())
    return ws


async def _serve_ws_message(
    ws: web.WebSocketResponse, hub: Hub, sub: Subscriber, known: tuple[str, ...]
) -> Subscriber:
    """Wait for one client message or for the hub to end the stream."""
    receive = asyncio.ensure_future(ws.receive())
    waiters: set[asyncio.Future[Any]] = {receive, sub.done}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not receive.done():
        receive.cancel()
        return sub
    msg = receive.result()
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        hub.detach(sub, "client")
        return sub
    if msg.type != WSMsgType.TEXT:
        await _ws_error(ws, "send JSON text messages")
        return sub
    try:
        op = json.loads(msg.data)
        if not isinstance(op, dict) or op.get("op") != "subscribe":
            raise Problem(400, 'the only op is {"op": "subscribe", "pairs": [...]}')
        names = op.get("pairs", list(known))
        if not isinstance(names, list) or not names:
            raise Problem(400, "pairs must be a non-empty list of pair names", param="pairs")
        pairs = check_pairs(names, known, "pairs")
        resume = parse_event_id(op.get("last_event_id"), "last_event_id")
    except ValueError:
        await _ws_error(ws, "message is not JSON")
        return sub
    except Problem as problem:
        await _ws_error(ws, problem.detail)
        return sub
    hub.detach(sub, "resubscribe")
    return await hub.subscribe(sub.transport, WS, pairs, resume)


async def _ws_error(ws: web.WebSocketResponse, detail: str) -> None:
    await ws.send_str(json.dumps({"event": "error", "data": {"detail": detail}}))
