"""The stream endpoints: SSE at ``/api/price-stream`` and WebSocket at ``/api/ws``.

Handlers only validate the request, send the headers and hand the socket to the hub;
from then on every byte the subscriber receives is written by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NamedTuple

from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11
from aiohttp.web import ContentCoding

from bittrade_feed.auth.policy import granted_pairs
from bittrade_feed.auth.principal import principal_of
from bittrade_feed.auth.scopes import grant
from bittrade_feed.broadcast.hub import REAUTH_REASONS, Full, Hub, Limited, Slot, Subscriber
from bittrade_feed.broadcast.limits import TokenBucket
from bittrade_feed.broadcast.registry import retry_spread
from bittrade_feed.broadcast.wire import SSE_HELLO, WireFormat
from bittrade_feed.config import Config
from bittrade_feed.server.address import client_address
from bittrade_feed.server.badinput import note_bad_message
from bittrade_feed.server.cors import foreign_origin
from bittrade_feed.server.params import alerts_after, last_event_id, requested_pairs
from bittrade_feed.server.problems import Problem, handles_own_problems, problem_response
from bittrade_feed.server.refusals import note_refusal
from bittrade_feed.server.state import CONFIG, HUB, current_config
from bittrade_feed.server.wsops import describe_limit, json_error, parse_op

MAX_WS_MESSAGE = 4096
WS_POLICY_VIOLATION = 1008
WS_REAUTH = 4001
"""Close code after a ``reauth`` event: refresh the credential, reconnect with the last id."""
PROXY_HINT = (
    "/api/ws is a WebSocket endpoint: send an HTTP/1.1 GET with 'Upgrade: websocket' and "
    "'Connection: Upgrade'; a reverse proxy must pass both through "
    "(README, 'Behind a reverse proxy')"
)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    # nginx buffers proxied responses unless told not to; an event stream must not wait.
    "X-Accel-Buffering": "no",
}


def _app_state(request: web.Request) -> tuple[Hub, Config]:
    return request.app[HUB], current_config(request.app)


def _reserve(request: web.Request, hub: Hub, transport: str, credential: str) -> Slot:
    """A subscriber slot under every limit, taken before any await; ``Problem`` if refused.

    503 for the global cap, 429 for a per-address, rate or per-credential limit, each
    with ``Retry-After``. The caller releases the slot in a ``finally``, so every way out
    of the handler gives it back.
    """
    try:
        return hub.admit(client_address(request), credential)
    except Full:
        hub.metrics.connections_closed.labels(transport, "limit").inc()
        detail = f"subscriber limit reached ({hub.config.max_subscribers}); retry later"
        note_refusal(request, "global", detail)
        raise Problem(
            503, detail, headers={"Retry-After": str(retry_spread())}, limit="global"
        ) from None
    except Limited as limited:
        hub.metrics.connections_closed.labels(transport, "limit").inc()
        note_refusal(request, limited.limit, limited.detail)
        raise Problem(
            429,
            limited.detail,
            headers={"Retry-After": str(limited.retry_after)},
            limit=limited.limit,
        ) from None


class Opening(NamedTuple):
    """What a stream request asked for, checked, and the slot it holds."""

    pairs: tuple[str, ...]
    resume: int | None
    """The price resume point (Last-Event-ID)."""
    alerts_after: int | None
    """The alert resume point (a firing id); checked even when alerts are off."""
    slot: Slot | None
    """``None`` for HEAD, which holds no subscriber slot."""


def _admit(request: web.Request, hub: Hub, transport: str) -> Opening:
    """The stream's parameters and slot; ``Problem`` if refused.

    The pairs are those requested that the principal is granted (all configured ones if
    none were named); asking only for pairs not granted is 403 naming them.
    """
    principal = principal_of(request)
    pairs = granted_pairs(request, principal, requested_pairs(request, "pairs"))
    resume = last_event_id(request)
    after = alerts_after(request)
    slot = (
        None
        if request.method == "HEAD"
        else _reserve(request, hub, transport, principal.credential)
    )
    return Opening(pairs, resume, after, slot)


def _check_origin(request: web.Request) -> None:
    """403 for a WebSocket handshake from a page on a site that is not allowed.

    Browsers send cookies with a cross-site WebSocket handshake and no CORS rule stops
    it, so without this any page could read a logged-in visitor's streams.
    """
    origin = foreign_origin(request)
    if origin is not None:
        detail = (
            # Cut: the header is the client's, and it goes into the log line too.
            f"Origin {origin[:100]!r} may not open WebSockets here: it is neither this daemon's "
            "own origin nor listed in server.cors_origins"
        )
        note_refusal(request, "origin", detail)
        raise Problem(403, detail)


def alert_owner(request: web.Request) -> str | None:
    """Whose alert events the stream gets: its principal's subject if alerts are on and it
    has the ``alerts`` scope (``local`` with auth off), else nobody's (``None``)."""
    principal = principal_of(request)
    if not request.app[CONFIG].alerts.enabled or not principal.alerts:
        return None
    return principal.subject


def _subscribe_options(request: web.Request, transport: str, opening: Opening) -> dict[str, Any]:
    """The principal's part of ``hub.subscribe``, counting the stream by its auth kind."""
    principal = principal_of(request)
    request.app[HUB].metrics.streams_opened.labels(transport, principal.kind).inc()
    owner = alert_owner(request)
    return {
        "credential": principal.credential,
        "until": principal.expires,
        "owner": owner,
        # Without an owner there is nothing to resume: the parameter is ignored.
        "alerts_after": opening.alerts_after if owner is not None else None,
    }


@handles_own_problems
async def price_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: snapshot or replay, then every price and status as it happens."""
    hub, _ = _app_state(request)
    try:
        opening = _admit(request, hub, "sse")
    except Problem as problem:
        return problem_response(problem)
    slot = opening.slot
    if slot is None:
        # The headers a GET would get, and no stream: HEAD must not hold a subscriber slot.
        return web.Response(headers=SSE_HEADERS)
    try:
        return await _serve_sse(request, hub, slot, opening)
    finally:
        hub.release(slot)


async def _serve_sse(
    request: web.Request, hub: Hub, slot: Slot, opening: Opening
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    # Never compressed, whatever Accept-Encoding says: the hub writes pre-framed bytes
    # straight to the socket, and a compressor would hold events back until it flushes.
    resp.enable_compression(force=ContentCoding.identity)
    http11 = request.version >= HttpVersion11
    if http11:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    # The first write goes through aiohttp so the headers leave with it; afterwards the
    # hub writes whole pre-framed chunks (the retry line first) straight to the transport.
    await resp.write(SSE_HELLO)
    transport = request.transport
    if transport is None or transport.is_closing():
        return resp
    fmt = WireFormat.SSE_CHUNKED if http11 else WireFormat.SSE_RAW
    sub = await hub.subscribe(
        slot,
        transport,
        fmt,
        opening.pairs,
        opening.resume,
        **_subscribe_options(request, "sse", opening),
    )
    try:
        await sub.done
    finally:
        hub.detach(sub)
    return resp


@handles_own_problems
async def ws_stream(request: web.Request) -> web.StreamResponse:
    """WebSocket: the same events as JSON ``{"event": ..., "data": ...}`` text messages.

    The client may send ``{"op": "subscribe", "pairs": [...], "last_event_id": N,
    "alerts_after": M}`` to change its pairs and resume points, at most
    ``stream.ws_ops_burst`` at once and then ``stream.ws_ops_per_second``; past that it is
    closed with code 1008.
    """
    hub, config = _app_state(request)
    try:
        _check_origin(request)
        opening = _admit(request, hub, "ws")
    except Problem as problem:
        return problem_response(problem)
    slot = opening.slot
    try:
        # Compression off: frames are pre-encoded once for every subscriber.
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_WS_MESSAGE, autoping=True)
        if slot is None or not ws.can_prepare(request).ok:
            # A proxy that drops the Upgrade headers turns the handshake into a plain GET
            # (and a HEAD, which holds no slot, cannot upgrade either).
            return problem_response(
                Problem(426, PROXY_HINT, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
            )
        return await _serve_ws(request, ws, hub, config, slot, opening)
    finally:
        if slot is not None:
            hub.release(slot)


async def _serve_ws(
    request: web.Request,
    ws: web.WebSocketResponse,
    hub: Hub,
    config: Config,
    slot: Slot,
    opening: Opening,
) -> web.StreamResponse:
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    stream = config.stream
    bucket = TokenBucket(stream.ws_ops_burst, stream.ws_ops_per_second, hub.clock.monotonic)
    sub = await hub.subscribe(
        slot,
        transport,
        WireFormat.WS,
        opening.pairs,
        opening.resume,
        **_subscribe_options(request, "ws", opening),
    )
    try:
        while True:
            sub = await _serve_ws_message(request, ws, sub, config.fetch.pairs, bucket, slot)
            if sub.done.done():
                break
    finally:
        hub.detach(sub)
        if not ws.closed:
            reason = sub.done.result() if sub.done.done() else "client"
            code, text = 1001, reason
            if reason == "abuse":
                code, text = WS_POLICY_VIOLATION, describe_limit(bucket.burst, bucket.rate)
            elif reason in REAUTH_REASONS:
                code, text = WS_REAUTH, f"reauth: credential {reason}"
            with contextlib.suppress(ConnectionError):
                await ws.close(code=code, message=text.encode())
    return ws


async def _serve_ws_message(
    request: web.Request,
    ws: web.WebSocketResponse,
    sub: Subscriber,
    known: tuple[str, ...],
    bucket: TokenBucket,
    slot: Slot,
) -> Subscriber:
    """Wait for one client message or for the hub to end the stream."""
    hub = request.app[HUB]
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
    if not bucket.take():
        note_bad_message(request.app, client_address(request), "over the op rate limit; closing")
        hub.detach(sub, "abuse")
        return sub
    try:
        if msg.type != WSMsgType.TEXT:
            raise Problem(400, "send JSON text messages")
        op = parse_op(msg.data, known)
    except Problem as problem:
        note_bad_message(request.app, client_address(request), problem.detail)
        await ws.send_str(json_error(problem.detail))
        return sub
    granted, refused = grant(op.pairs, principal_of(request).pairs)
    if refused:
        # The same rule as the handshake: granted pairs are streamed, the rest named.
        request.app[HUB].metrics.refusals.labels("scope").inc()
        detail = f"this credential does not grant {', '.join(refused)}"
        await ws.send_str(json_error(detail + ("" if granted else "; subscription unchanged")))
        if not granted:
            return sub
    # No await from the detach to the new registration: no live alert falls between the
    # two, and the old cursor carries over, so none is repeated either.
    hub.detach(sub, "resubscribe")
    new = await hub.subscribe(
        slot,
        sub.transport,
        WireFormat.WS,
        granted,
        op.last_event_id,
        credential=sub.credential,
        owner=sub.owner,
        alerts_after=op.alerts_after if sub.owner is not None else None,
        alert_cursor=sub.alert_id,
    )
    # The stream's lifetime (or credential expiry) and heartbeat schedule carry over: ops
    # must not postpone the timer that retires old streams and checks unsent bytes.
    new.expires, new.ends = sub.expires, sub.ends
    new.last_write = min(new.last_write, sub.last_write)
    return new
