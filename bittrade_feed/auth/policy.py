"""Which endpoints need what, and the middleware that enforces it before any handler runs.

Public paths (``auth.public``, plus login and logout) pass untouched. Every other route
needs a credential: ``Authorization: Bearer``, the ``bt_session`` cookie, or on the two
stream endpoints a one-time ``?ticket=``. ``/api/prices`` also needs the ``history``
scope; pairs are checked by the handlers, which know what was asked for. Unknown paths
are left to the router's 404 (it reveals nothing a credential would protect).

The middleware is a plain function, like ``problem_middleware``: a stream that passes it
is handed on without a suspended coroutine frame per subscriber. Only a token whose
issuer's key set must be fetched first takes the slow, awaiting path.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import structlog
from aiohttp import web

from bittrade_feed.auth.authenticator import Authenticator
from bittrade_feed.auth.principal import PRINCIPAL, AuthFailure, Principal
from bittrade_feed.auth.scopes import grant
from bittrade_feed.auth.sessions import COOKIE
from bittrade_feed.auth.settings import ALWAYS_PUBLIC
from bittrade_feed.auth.tokens import NeedKeys
from bittrade_feed.ops.logs import RateLimitedLog
from bittrade_feed.server.problems import Handler, Problem, problem_response
from bittrade_feed.server.state import AUTH, CLOCK, METRICS, SESSION

STREAM_PATHS = ("/api/price-stream", "/api/ws")
"""The only endpoints that take ``?ticket=``."""
HISTORY_PATHS = ("/api/prices",)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bittrade-feed"'}
REFUSAL_LOG = web.AppKey("auth_refusal_log", RateLimitedLog)
LINES_PER_MINUTE = 10

log = structlog.get_logger("bittrade_feed.auth")


def install(app: web.Application, auth: Authenticator) -> None:
    """Protect ``app`` with ``auth``: its middleware, and the key store's SIGHUP reload."""
    app[AUTH] = auth
    app[REFUSAL_LOG] = RateLimitedLog(LINES_PER_MINUTE, app[CLOCK].monotonic)
    app.middlewares.append(auth_middleware)


def route_path(request: web.Request) -> str:
    """The matched route's path (``/dashboard/{name}``), never the raw request path, so no
    encoding or slash trick can make a protected route look like a public one."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def is_public(path: str, public: tuple[str, ...]) -> bool:
    """Whether ``path`` is listed (exactly, or under a ``prefix*``)."""
    if path in ALWAYS_PUBLIC:
        return True
    return any(path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in public)


@web.middleware
def auth_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Set ``request["principal"]`` or answer 401/403 (problem+json)."""
    auth = request.app.get(AUTH)
    if auth is None or request.match_info.http_exception is not None:
        return handler(request)
    path = route_path(request)
    if is_public(path, auth.config.public):
        return handler(request)
    try:
        principal = authenticate(request, auth, path)
    except NeedKeys as need:
        return _after_fetch(request, handler, auth, path, need)
    except AuthFailure as failure:
        return _ready(refuse_auth(request, failure))
    return _admitted(request, handler, principal, path)


def _admitted(
    request: web.Request, handler: Handler, principal: Principal, path: str
) -> Awaitable[web.StreamResponse]:
    request[PRINCIPAL] = principal
    if path in HISTORY_PATHS and not principal.history:
        return _ready(
            refuse_scope(request, f"{path} needs the history scope, which this credential lacks")
        )
    return handler(request)


async def _after_fetch(
    request: web.Request, handler: Handler, auth: Authenticator, path: str, need: NeedKeys
) -> web.StreamResponse:
    await need.jwks.refresh(request.app[SESSION])
    try:
        principal = authenticate(request, auth, path)
    except NeedKeys:  # still nothing usable after a fetch
        principal = None
        failure = AuthFailure("unknown_kid", "the issuer's key set could not be fetched")
    except AuthFailure as exc:
        principal, failure = None, exc
    if principal is None:
        return refuse_auth(request, failure)
    return await _admitted(request, handler, principal, path)


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


def authenticate(request: web.Request, auth: Authenticator, path: str) -> Principal:
    """The request's principal: Bearer header, else session cookie, else stream ticket."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthFailure("malformed", "send 'Authorization: Bearer <api key or JWT>'")
        return auth.credential(value.strip())
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return auth.refresh(auth.sessions.open(cookie, auth.clock.time()))
    ticket = request.query.get("ticket")
    if ticket is not None:
        if path not in STREAM_PATHS:
            raise AuthFailure("bad_ticket", "tickets are accepted by the stream endpoints only")
        return auth.refresh(auth.tickets.redeem(ticket, auth.clock.monotonic()))
    raise AuthFailure(
        "missing",
        f"{path} needs a credential: 'Authorization: Bearer <api key or JWT>', the "
        "bt_session cookie (POST /api/login), or on streams ?ticket= (POST /api/stream-ticket)",
    )


def refuse_auth(request: web.Request, failure: AuthFailure) -> web.Response:
    """The 401 for a missing or refused credential, counted and (rate-limited) logged."""
    metrics = request.app[METRICS]
    metrics.refusals.labels("auth").inc()
    metrics.auth_failures.labels(failure.reason).inc()
    _log(request, "auth", failure.reason)
    return problem_response(Problem(401, failure.detail, headers=CHALLENGE))


def refuse_scope(request: web.Request, detail: str, **extra: Any) -> web.Response:
    """The 403 for a credential that does not grant what was asked, counted and logged."""
    return problem_response(scope_problem(request, detail, **extra))


def scope_problem(request: web.Request, detail: str, **extra: Any) -> Problem:
    """``refuse_scope`` as a ``Problem`` to raise from a handler (counted and logged now)."""
    request.app[METRICS].refusals.labels("scope").inc()
    _log(request, "scope", detail)
    return Problem(403, detail, **extra)


def granted_pairs(
    request: web.Request, principal: Principal, pairs: tuple[str, ...]
) -> tuple[str, ...]:
    """The requested pairs the principal may read; ``Problem`` 403 when it may read none."""
    granted, refused = grant(pairs, principal.pairs)
    if not granted:
        raise scope_problem(
            request,
            f"this credential does not grant {', '.join(refused)} "
            f"(it grants {', '.join(principal.pairs) or 'no pairs'})",
            pairs=list(refused),
        )
    return granted


def _log(request: web.Request, refusal: str, why: str) -> None:
    held_back = request.app[REFUSAL_LOG].allow()
    if held_back is not None:
        # The path only: a query may hold a ticket, and no header is ever logged.
        log.warning(
            "request refused",
            refusal=refusal,
            why=why,
            path=request.path,
            peer=str(request.remote),
            held_back=held_back,
        )
