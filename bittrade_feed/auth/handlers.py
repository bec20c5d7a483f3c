"""The login endpoints: ``POST /api/login``, ``/api/logout``, ``/api/stream-ticket`` and
``GET /api/whoami``.

Login turns an API key or JWT into the ``bt_session`` cookie, for browsers, whose
EventSource cannot send a header: HttpOnly (no script reads it), SameSite=Strict (no other
site sends it), Secure unless the listener is plain http on loopback (``auth.cookie_secure``).
"""

from __future__ import annotations

import ipaddress
import json
import math
from typing import Any

from aiohttp import web

from bittrade_feed.auth.authenticator import Authenticator
from bittrade_feed.auth.policy import refuse_auth
from bittrade_feed.auth.principal import AuthFailure, Principal, principal_of
from bittrade_feed.auth.sessions import COOKIE
from bittrade_feed.auth.tokens import NeedKeys
from bittrade_feed.models import format_ts
from bittrade_feed.server.problems import Problem
from bittrade_feed.server.state import AUTH, SESSION

MAX_LOGIN_BODY = 16 * 1024
"""A key is 60 characters and a JWT a few KiB; a bigger body is not a login."""
AUTH_OFF = "authentication is off ([auth] enabled = false): every endpoint is open"


def add_auth_routes(app: web.Application) -> None:
    """Register the endpoints (they answer 404 with a hint while auth is off)."""
    app.add_routes(
        [
            web.post("/api/login", login),
            web.post("/api/logout", logout),
            web.get("/api/whoami", whoami),
            web.post("/api/stream-ticket", stream_ticket),
        ]
    )


def _auth(request: web.Request) -> Authenticator:
    auth = request.app.get(AUTH)
    if auth is None:
        raise Problem(404, AUTH_OFF)
    return auth


async def login(request: web.Request) -> web.Response:
    """``{"key": "<api key or JWT>"}`` (or form field ``key``) -> 204 and the cookie."""
    auth = _auth(request)
    presented = await _presented_key(request)
    try:
        principal = await _verify(request, auth, presented)
    except AuthFailure as failure:
        return refuse_auth(request, failure)
    expires = auth.session_expiry(principal)
    resp = web.Response(status=204)
    resp.set_cookie(
        COOKIE,
        auth.sessions.sign(principal, expires),
        max_age=max(1, math.floor(expires - auth.clock.time())),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=cookie_secure(request, auth),
    )
    return resp


async def _verify(request: web.Request, auth: Authenticator, presented: str) -> Principal:
    try:
        return auth.credential(presented)
    except NeedKeys as need:
        await need.jwks.refresh(request.app[SESSION])
    try:
        return auth.credential(presented)
    except NeedKeys:
        raise AuthFailure("unknown_kid", "the issuer's key set could not be fetched") from None


async def _presented_key(request: web.Request) -> str:
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        raise Problem(413, f"a login body is at most {MAX_LOGIN_BODY} bytes")
    # read() takes the whole body (a short read could cut a JWT in two); aiohttp's
    # client_max_size (1 MiB) bounds a chunked body that announced no length.
    raw = await request.read()
    if len(raw) > MAX_LOGIN_BODY:
        raise Problem(413, f"a login body is at most {MAX_LOGIN_BODY} bytes")
    key: Any = None
    if request.content_type == "application/json":
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise Problem(400, 'body is not JSON; send {"key": "..."}') from None
        key = body.get("key") if isinstance(body, dict) else None
    elif request.content_type == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qs  # noqa: PLC0415 - the rare form login only

        try:
            key = parse_qs(raw.decode(), max_num_fields=10).get("key", [None])[0]
        except (UnicodeDecodeError, ValueError):
            raise Problem(400, "form body is not valid") from None
    else:
        raise Problem(415, 'send JSON {"key": "..."} or a form with the field key')
    if not isinstance(key, str) or not key.strip():
        raise Problem(400, "the body needs a field key: an API key or a JWT", param="key")
    return key.strip()


def cookie_secure(request: web.Request, auth: Authenticator) -> bool:
    """The cookie's Secure flag: always, except plain http on a loopback listener (auto)."""
    setting = auth.config.cookie_secure
    if setting != "auto":
        return setting == "true"
    if request.secure:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    host = sockname[0] if isinstance(sockname, tuple) and sockname else ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a Unix socket or unknown: assume a proxy terminates TLS in front


async def logout(request: web.Request) -> web.Response:
    """204, and the cookie cleared."""
    auth = _auth(request)
    resp = web.Response(status=204)
    resp.del_cookie(
        COOKIE, path="/", httponly=True, samesite="Strict", secure=cookie_secure(request, auth)
    )
    return resp


def describe(principal: Principal) -> dict[str, Any]:
    """The principal as ``/api/whoami`` shows it (``expires`` in RFC 3339, or null)."""
    return {
        "kind": principal.kind,
        "subject": principal.subject,
        "pairs": list(principal.pairs),
        "history": principal.history,
        "alerts": principal.alerts,
        "expires": None
        if principal.expires is None or principal.expires == math.inf
        else format_ts(round(principal.expires * 1000)),
    }


async def whoami(request: web.Request) -> web.Response:
    """Who the request authenticated as (anonymous when auth is off)."""
    return web.json_response(describe(principal_of(request)))


async def stream_ticket(request: web.Request) -> web.Response:
    """A single-use ``?ticket=`` for the stream endpoints, valid 30 s."""
    auth = _auth(request)
    ticket = auth.tickets.issue(principal_of(request), auth.clock.monotonic())
    if ticket is None:
        raise Problem(
            503,
            "too many outstanding stream tickets; retry in a few seconds",
            headers={"Retry-After": "5"},
        )
    return web.json_response({"ticket": ticket, "expires_in": round(auth.tickets.ttl)})
