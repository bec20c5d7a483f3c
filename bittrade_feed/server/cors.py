"""CORS for browser clients on other sites, and the WebSocket ``Origin`` check.

Only origins listed exactly in ``server.cors_origins`` get ``Access-Control-Allow-Origin``
(their own origin, never ``*``) with ``Access-Control-Allow-Credentials: true``, so a page
there may read the API with its visitor's cookie; any other origin gets no CORS header and
the browser keeps the answer from the page. ``Vary: Origin`` is on every answer, so a cache
never hands one origin's answer to another.

The headers are added in ``on_response_prepare``: it runs for every response just before
its headers are sent, including a stream's (``StreamResponse.prepare``), the problem
answers handlers return themselves and the auth middleware's 401s; a middleware that
edits the response after the handler would be too late for a stream that has started.
"""

from __future__ import annotations

from collections.abc import Awaitable
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from bittrade_feed.server.problems import Handler
from bittrade_feed.server.state import CONFIG

ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
PREFLIGHT_MAX_AGE = "600"


def install(app: web.Application) -> None:
    """Add the CORS headers to every answer of ``app``."""
    app.on_response_prepare.append(_add_headers)


def allowed_origin(request: web.BaseRequest) -> str | None:
    """The request's ``Origin`` if it is in ``server.cors_origins``, else ``None``."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not isinstance(request, web.Request):
        return None
    origin = origin.strip().lower()
    return origin if origin in request.app[CONFIG].server.cors_origins else None


def foreign_origin(request: web.Request) -> str | None:
    """The ``Origin`` of a request from another site that is not allowed, else ``None``.

    A request without ``Origin`` (not a browser), from the daemon's own origin (its
    ``Host``) or from a listed origin passes. The scheme is not compared: behind a proxy
    that terminates TLS the daemon sees http while the page's origin is https.
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or allowed_origin(request) is not None:
        return None
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return origin
    if netloc and netloc == request.host.lower():
        return None
    return origin


async def _add_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers.add(hdrs.VARY, hdrs.ORIGIN)
    origin = allowed_origin(request)
    if origin is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"


@web.middleware
def preflight_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Answer a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``).

    Before the auth middleware: a preflight never carries credentials. For an origin that
    is not listed the answer has no allow headers, so the browser stops there.
    """
    if request.method != hdrs.METH_OPTIONS or (
        hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers
    ):
        return handler(request)
    return _preflight(request)


async def _preflight(request: web.Request) -> web.StreamResponse:
    headers = {}
    if allowed_origin(request) is not None:
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
        }
    return web.Response(status=204, headers=headers)
