"""The webhook endpoints REST API (issue 14), mounted with the alert API.

``/api/alerts/webhooks`` (POST create, GET list), ``/api/alerts/webhooks/{id}`` (DELETE),
``/api/alerts/webhooks/{id}/rotate`` (POST) and ``/api/alerts/webhooks/{id}/test`` (POST:
one signed delivery attempt now, its outcome in the answer). Failed deliveries:
``/api/alerts/deliveries`` (GET the caller's) and ``/api/alerts/deliveries/{id}/retry``
(POST: back in the outbox, due now, with a fresh attempt count).

The secret is in the answer to create and rotate only, never in a listing. A URL is
checked by the SSRF guard's URL rules when it is given (and its addresses again at
connect time, on every delivery). Owners and scope as for rules: another owner's
endpoint is a 404.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from bittrade_feed.alerts.backend import EndpointBackend, Retry
from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.ssrf import Refused, check_url, guarded_session
from bittrade_feed.alerts.webhook import BODY_FORMATS, body_for, send, signed_headers
from bittrade_feed.models import format_ts
from bittrade_feed.server.alerts import (
    DELIVERY_STORE,
    ENDPOINT_STORE,
    OUTBOX,
    USER_AGENT,
    policy_of,
    read_body,
    require_owner,
    store_errors,
)
from bittrade_feed.server.params import int_param
from bittrade_feed.server.problems import Problem
from bittrade_feed.server.state import CLOCK, CONFIG

PREFIX = "/api/alerts/webhooks"
DELIVERIES = "/api/alerts/deliveries"
MAX_LISTED = 1000
MAX_URL = 2048


def add_webhook_routes(app: web.Application) -> None:
    """Mount the endpoint API when ``alerts.enabled`` (nothing changes otherwise)."""
    if not app[CONFIG].alerts.enabled:
        return
    app.add_routes(
        [
            web.post(PREFIX, create_endpoint),
            web.get(PREFIX, list_endpoints),
            web.delete(PREFIX + "/{id}", delete_endpoint),
            web.post(PREFIX + "/{id}/rotate", rotate_endpoint),
            web.post(PREFIX + "/{id}/test", test_endpoint),
            web.get(DELIVERIES, list_failed),
            web.post(DELIVERIES + "/{id}/retry", retry_delivery),
        ]
    )


def _endpoints(request: web.Request) -> EndpointBackend:
    return request.app[ENDPOINT_STORE]


def _now_ms(request: web.Request) -> int:
    return round(request.app[CLOCK].time() * 1000)


def _shown(endpoint: Endpoint, now_ms: int, *, secret: bool = False) -> dict[str, Any]:
    rotating = endpoint.old_until_ms if len(endpoint.signing_keys(now_ms)) > 1 else None
    shown: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "format": endpoint.format,
        "created": format_ts(endpoint.created_ms),
        "disabled": None if endpoint.disabled_ms is None else format_ts(endpoint.disabled_ms),
        "old_secret_until": None if rotating is None else format_ts(rotating),
    }
    if secret:
        shown["secret"] = endpoint.secret
    return shown


async def _endpoint_body(request: web.Request) -> tuple[str, str]:
    """The ``url`` and ``format`` of a create request (``Problem`` naming the field)."""
    body = await read_body(request)
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", field="body")
    for name in body:
        if name not in ("url", "format"):
            raise Problem(422, f"{str(name)[:40]} is not a field of a webhook endpoint", field=name)
    body_format = body.get("format", "standard")
    if body_format not in BODY_FORMATS:
        raise Problem(422, f"format must be one of {', '.join(BODY_FORMATS)}", field="format")
    raw = body.get("url")
    if not isinstance(raw, str) or not raw:
        raise Problem(422, "url is required: a string", field="url")
    if len(raw) > MAX_URL:
        raise Problem(422, f"url is over {MAX_URL} characters", field="url")
    try:
        check_url(raw, policy_of(request.app[CONFIG].alerts))
    except Refused as exc:
        raise Problem(422, f"url {exc.reason}", field="url") from None
    return raw, str(body_format)


async def _owned(request: web.Request, owner: str) -> Endpoint:
    ident = request.match_info["id"]
    endpoint = await _endpoints(request).get(owner, ident)
    if endpoint is None:
        raise Problem(404, f"no webhook endpoint {ident[:40]!r}")
    return endpoint


@store_errors
async def create_endpoint(request: web.Request) -> web.StreamResponse:
    """POST: a new endpoint; 201 with its secret (shown this once) and Location."""
    owner = require_owner(request)
    url, body_format = await _endpoint_body(request)
    limit = request.app[CONFIG].alerts.max_endpoints_per_owner
    now_ms = _now_ms(request)
    endpoint = await _endpoints(request).create(
        owner, url, now_ms=now_ms, limit=limit, body_format=body_format
    )
    response = web.json_response(_shown(endpoint, now_ms, secret=True), status=201)
    response.headers["Location"] = f"{PREFIX}/{endpoint.id}"
    return response


@store_errors
async def list_endpoints(request: web.Request) -> web.StreamResponse:
    """GET: the caller's endpoints, oldest first, without secrets."""
    owner, now_ms = require_owner(request), _now_ms(request)
    endpoints = await _endpoints(request).owned(owner)
    return web.json_response({"webhooks": [_shown(e, now_ms) for e in endpoints]})


@store_errors
async def delete_endpoint(request: web.Request) -> web.StreamResponse:
    """DELETE an endpoint and its undelivered webhooks."""
    owner = require_owner(request)
    ident = request.match_info["id"]
    if not await _endpoints(request).delete(owner, ident):
        raise Problem(404, f"no webhook endpoint {ident[:40]!r}")
    return web.Response(status=204)


@store_errors
async def rotate_endpoint(request: web.Request) -> web.StreamResponse:
    """POST: a new secret (shown once); the old one signs too for ``rotation_overlap`` s."""
    owner, now_ms = require_owner(request), _now_ms(request)
    ident = request.match_info["id"]
    overlap_ms = round(request.app[CONFIG].alerts.rotation_overlap * 1000)
    endpoint = await _endpoints(request).rotate(owner, ident, now_ms=now_ms, overlap_ms=overlap_ms)
    if endpoint is None:
        raise Problem(404, f"no webhook endpoint {ident[:40]!r}")
    return web.json_response(_shown(endpoint, now_ms, secret=True))


@store_errors
async def test_endpoint(request: web.Request) -> web.StreamResponse:
    """POST: one signed ``alert.test`` delivery now; the answer says how it went."""
    owner = require_owner(request)
    endpoint = await _owned(request, owner)
    config = request.app[CONFIG].alerts
    now = request.app[CLOCK].time()
    msg_id = f"test_{endpoint.id}_{secrets.token_hex(6)}"
    data = {"endpoint": endpoint.id, "test": True, "detail": f"test of webhook {endpoint.id}"}
    body = body_for(endpoint.format, "alert.test", data, now, msg_id)
    headers = signed_headers(msg_id, body, endpoint.signing_keys(round(now * 1000)), now)
    policy = policy_of(config)
    async with guarded_session(
        policy, timeout=config.webhook_timeout, user_agent=USER_AGENT
    ) as session:
        outcome = await send(session, policy, endpoint.url, body, headers, now=now)
    return web.json_response(
        {
            "webhook_id": msg_id,
            "delivered": outcome.delivered,
            "status": outcome.status,
            "error": outcome.error or None,
        }
    )


@store_errors
async def list_failed(request: web.Request) -> web.StreamResponse:
    """GET the caller's failed webhook deliveries, newest first (``limit``, default 100)."""
    owner = require_owner(request)
    limit = int_param(request, "limit", 100, 1, MAX_LISTED)
    failed = await request.app[DELIVERY_STORE].failed(owner, limit)
    return web.json_response(
        {
            "deliveries": [
                {
                    "id": f.id,
                    "rule_id": f.rule_id,
                    "firing_id": f.firing_id,
                    "endpoint_id": f.endpoint_id,
                    "attempts": f.attempts,
                    "last_error": f.last_error,
                }
                for f in failed
            ]
        }
    )


@store_errors
async def retry_delivery(request: web.Request) -> web.StreamResponse:
    """POST: queue a failed delivery again (202); 404 unknown, 409 not failed or no endpoint."""
    owner, ident = require_owner(request), request.match_info["id"]
    result = await request.app[DELIVERY_STORE].retry(owner, ident, _now_ms(request))
    shown = ident[:80]
    if result is Retry.NOT_FOUND:
        raise Problem(404, f"no webhook delivery {shown!r}")
    if result is Retry.NOT_FAILED:
        raise Problem(409, f"delivery {shown!r} has not failed (it is pending or delivered)")
    if result is Retry.ENDPOINT_GONE:
        raise Problem(409, f"the endpoint of delivery {shown!r} was deleted or disabled (410)")
    request.app[OUTBOX].poke()
    return web.json_response({"id": ident, "state": "pending"}, status=202)
