"""RFC 9457 problem details: every error answer says what went wrong and what to fix."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("bittrade_feed.server.app")

PROBLEM_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised by handlers; the middleware turns it into a problem+json answer."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: Problem) -> web.Response:
    """Render a ``Problem``."""
    body = {
        "type": "about:blank",
        "title": _title(problem.status),
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    return web.Response(
        status=problem.status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_TYPE,
        headers=problem.headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


OWN_PROBLEMS = "_bittrade_feed_own_problems"


def handles_own_problems(handler: Handler) -> Handler:
    """Mark a long-lived handler that renders its own ``Problem``s.

    The middleware then hands such a handler its request directly instead of awaiting it
    inside its own frame: a stream lives for hours, and a suspended middleware frame per
    subscriber is about 0.9 KiB of memory (docs/benchmarks.md).
    """
    setattr(handler, OWN_PROBLEMS, True)
    return handler


@web.middleware
def problem_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Turn every error, ours or aiohttp's, into problem+json; never leak a traceback."""
    if getattr(request.match_info.handler, OWN_PROBLEMS, False):
        return handler(request)
    return _guarded(request, handler)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = {
            404: f"no such endpoint: {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem_response(Problem(exc.status, detail, headers=headers))
    except Exception:
        log.exception("request failed", path=request.path)
        return problem_response(Problem(500, "internal error; the daemon log has the details"))
