"""The alert rules REST API (issue 14), mounted only when ``alerts.enabled``.

``/api/alerts/rules`` (POST create, GET list), ``/api/alerts/rules/{id}`` (GET, PUT with
If-Match, DELETE with If-Match), ``/api/alerts/rules/{id}/firings`` (GET) and
``/api/alerts/rules/{id}/test`` (POST: record a firing no tick caused, to try delivery).

The owner is the caller's principal subject (``local`` with auth off); another owner's
rule is a 404, never a 403, so ids say nothing about other owners. With auth on, the
principal needs the ``alerts`` scope. Every bad body is problem+json naming ``field``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, Protocol

from aiohttp import web

from bittrade_feed.alerts.backend import (
    DeliveryBackend,
    EndpointBackend,
    OutboxBackend,
    RuleBackend,
)
from bittrade_feed.alerts.deliveries import Deliveries, OutboxStore
from bittrade_feed.alerts.endpoints import EndpointStore
from bittrade_feed.alerts.engine import AlertEngine, OnFired
from bittrade_feed.alerts.fanout import FanOut
from bittrade_feed.alerts.outbox import OutboxWorker
from bittrade_feed.alerts.rules import Rule
from bittrade_feed.alerts.spec import Invalid, parse_rule, rule_body
from bittrade_feed.alerts.ssrf import Policy, guarded_session
from bittrade_feed.alerts.store import (
    AlertStore,
    QuotaExceeded,
    StoredFiring,
    StoredRule,
    VersionMismatch,
)
from bittrade_feed.auth.principal import principal_of
from bittrade_feed.config import AlertsConfig
from bittrade_feed.errors import StoreError
from bittrade_feed.models import format_ts
from bittrade_feed.ops.metrics import AlertMetrics
from bittrade_feed.server.cluster import CLUSTER
from bittrade_feed.server.params import int_param
from bittrade_feed.server.problems import Problem
from bittrade_feed.server.state import CLOCK, CONFIG, HUB, METRICS, STORE, SUPERVISOR, TICKLOG


class RuleEditor(Protocol):
    """Rule changes made through the API: the engine on one daemon (it evaluates them at
    once), ``cluster.alerts.RuleWriter`` in a cluster (the leader's engine reads them)."""

    async def create(self, owner: str, rule: Rule, *, max_rules: int) -> StoredRule: ...  # noqa: D102
    async def replace(  # noqa: D102
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None
    ) -> StoredRule: ...
    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None: ...  # noqa: D102


# Each is SQLite on one daemon and Redis in a cluster (``alerts.backend``).
ALERT_ENGINE: web.AppKey[RuleEditor] = web.AppKey("alert_engine")
ALERT_STORE: web.AppKey[RuleBackend] = web.AppKey("alert_store")
ENDPOINT_STORE: web.AppKey[EndpointBackend] = web.AppKey("endpoint_store")
DELIVERY_STORE: web.AppKey[DeliveryBackend] = web.AppKey("alert_deliveries")
OUTBOX = web.AppKey("alert_outbox", OutboxWorker)
ON_FIRED: web.AppKey[OnFired] = web.AppKey("alert_on_fired")
"""What follows a committed firing (a rule's, or a test firing through the API)."""
MAX_BODY = 16 * 1024
"""Bytes a rule body may have; a rule is a few hundred."""
MAX_FIRINGS = 1000
PREFIX = "/api/alerts/rules"
USER_AGENT = "bittrade-feed-webhooks"


def policy_of(config: AlertsConfig) -> Policy:
    """The SSRF policy the ``alerts.webhook_*`` keys describe."""
    return Policy(allow_http=config.webhook_allow_http, allow=tuple(config.webhook_allow))


def add_alert_routes(app: web.Application) -> None:
    """Mount the alert API when ``alerts.enabled`` (nothing changes otherwise)."""
    if not app[CONFIG].alerts.enabled:
        return
    app.add_routes(
        [
            web.post(PREFIX, create_rule),
            web.get(PREFIX, list_rules),
            web.get(PREFIX + "/{id}", get_rule),
            web.put(PREFIX + "/{id}", update_rule),
            web.delete(PREFIX + "/{id}", delete_rule),
            web.get(PREFIX + "/{id}/firings", list_firings),
            web.post(PREFIX + "/{id}/test", test_fire),
        ]
    )


def _worker(app: web.Application, outbox: OutboxBackend, metrics: AlertMetrics) -> OutboxWorker:
    """The webhook worker on ``outbox`` (SQLite, or Redis in a cluster)."""
    config = app[CONFIG].alerts
    policy = policy_of(config)
    return OutboxWorker(
        outbox,
        app[CLOCK],
        policy,
        lambda: guarded_session(policy, timeout=config.webhook_timeout, user_agent=USER_AGENT),
        max_attempts=config.max_attempts,
        retry_base=config.retry_base,
        retry_cap=config.retry_cap,
        metrics=metrics,
    )


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """One daemon: load the rules and run the engine (after the tick log, before the
    fetcher). A cluster's alerts start in ``cluster_alerts_ctx`` instead."""
    config = app[CONFIG].alerts
    if not config.enabled or app[CONFIG].cluster.enabled:
        yield
        return
    alerts = AlertStore(app[STORE])
    metrics = AlertMetrics(app[METRICS].registry)
    worker = _worker(app, OutboxStore(app[STORE]), metrics)
    hub = app[HUB]

    latest = await alerts.latest_firing_id()
    fan_out = FanOut(alerts, hub, app[CLOCK], latest)

    def fired(_owner: str, _firing: StoredFiring) -> None:
        # Committed: streams get it through the fan-out (in id order), webhooks from the
        # outbox.
        fan_out.poke()
        worker.poke()

    engine = AlertEngine(
        alerts,
        app[STORE],
        app[CLOCK],
        checkpoint_seconds=config.checkpoint_seconds,
        metrics=metrics,
        on_fired=fired,
    )
    ticklog = app[TICKLOG]
    await engine.load(ticklog.last_id)
    ticklog.add_listener(engine.on_tick, name="alerts")
    app[ALERT_STORE], app[ALERT_ENGINE], app[ON_FIRED] = alerts, engine, fired
    app[ENDPOINT_STORE], app[DELIVERY_STORE] = EndpointStore(app[STORE]), Deliveries(app[STORE])
    app[OUTBOX] = worker
    # The firing rows are the stream channel's log: resumes (alerts_after) read them.
    hub.set_alert_source(alerts.firings_after, latest=latest)
    streams = app[SUPERVISOR].spawn("alerts-fan-out", fan_out.run, restart=True)
    # A crash loses nothing: a restarted engine replays stored ticks from its cursor.
    task = app[SUPERVISOR].spawn("alerts", engine.run, restart=True)
    # Rows stay pending until an attempt ends: a restarted worker sends them again.
    outbox = app[SUPERVISOR].spawn("alerts-outbox", worker.run, restart=True)
    yield
    hub.set_alert_source(None)
    await app[SUPERVISOR].cancel(outbox)
    await app[SUPERVISOR].cancel(task)
    await app[SUPERVISOR].cancel(streams)


async def cluster_alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cluster: the alert data in Redis, the engine and the outbox on the leader only,
    alert events on every node from the ``fired`` stream (after ``cluster_ctx``, which
    made the node; stopped before the node leaves)."""
    config = app[CONFIG]
    if not (config.alerts.enabled and config.cluster.enabled):
        yield
        return
    from bittrade_feed.cluster.alerts import ClusterAlerts  # noqa: PLC0415 - needs redis

    metrics = AlertMetrics(app[METRICS].registry)
    alerts = ClusterAlerts(
        app[CLUSTER],
        app[TICKLOG],
        app[STORE],
        app[HUB],
        app[CLOCK],
        app[SUPERVISOR],
        metrics,
        lambda outbox: _worker(app, outbox, metrics),
        checkpoint_seconds=config.alerts.checkpoint_seconds,
    )
    worker = alerts.worker
    app[ALERT_STORE], app[ALERT_ENGINE] = alerts.rules, alerts.writer
    app[ENDPOINT_STORE], app[DELIVERY_STORE] = alerts.endpoints, alerts.deliveries
    # Streams get a test firing from the fan-out, as every other one, on every node.
    app[OUTBOX], app[ON_FIRED] = worker, lambda _owner, _firing: worker.poke()
    await alerts.start()
    yield
    await alerts.stop()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def store_errors(handler: Handler) -> Handler:
    """A database fault is the daemon's, not the client's: 503, never a 500."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except QuotaExceeded as exc:
            raise Problem(409, str(exc), limit=exc.limit) from None
        except VersionMismatch as exc:
            if exc.current is None:
                raise Problem(404, f"no alert rule {request.match_info.get('id')}") from None
            raise Problem(412, f"{exc} (If-Match does not match)", field="If-Match") from None
        except StoreError as exc:
            raise Problem(
                503, f"alerts are unavailable: {exc}", headers={"Retry-After": "5"}
            ) from None

    return wrapped


def require_owner(request: web.Request) -> str:
    """The caller's owner name; 403 unless its credential has the ``alerts`` scope."""
    principal = principal_of(request)
    if not principal.alerts:
        raise Problem(403, "this credential may not manage alerts (scope alerts)", scope="alerts")
    return principal.subject


def _rule_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise Problem(404, f"no alert rule {raw[:40]!r}")
    return int(raw)


def _if_match(request: web.Request, rule_id: int) -> int | None:
    """The version an If-Match names (``None``: no If-Match, or ``*``)."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    tag = raw.strip().removeprefix("W/")
    prefix = f'"{rule_id}-'
    if tag.startswith(prefix) and tag.endswith('"') and tag[len(prefix) : -1].isdigit():
        return int(tag[len(prefix) : -1])
    raise Problem(412, f"If-Match {raw[:60]!r} is not an ETag of rule {rule_id}", field="If-Match")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


async def read_body(request: web.Request) -> object:
    """The decoded JSON body (at most ``MAX_BODY`` bytes); problem+json for anything else."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"the body is over {MAX_BODY} bytes", field="body")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Problem(413, f"the body is over {MAX_BODY} bytes", field="body")
    try:
        return json.loads(raw.decode(), parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, json.JSONDecodeError) else "not UTF-8 JSON"
        raise Problem(400, f"the body is not JSON: {reason[:200]}", field="body") from None


async def _rule(request: web.Request, owner: str) -> Rule:
    body = await read_body(request)
    config = request.app[CONFIG]
    now_ms = round(request.app[CLOCK].time() * 1000)
    try:
        rule = parse_rule(body, pairs=config.fetch.pairs, now_ms=now_ms)
    except Invalid as bad:
        raise Problem(bad.status, f"{bad.field} {bad.detail}", field=bad.field) from None
    if rule.webhooks:
        # Checked here for a clear error; an endpoint deleted later is skipped when a
        # firing is recorded (the outbox insert joins on the owner's live endpoints).
        owned = {e.id for e in await request.app[ENDPOINT_STORE].owned(owner)}
        for i, ident in enumerate(rule.webhooks):
            if ident not in owned:
                where = f"webhooks[{i}]"
                raise Problem(422, f"{where} is not one of your webhook endpoints", field=where)
    return rule


def _shown(stored: Any) -> dict[str, Any]:
    state = stored.state
    return {
        "id": stored.id,
        **rule_body(stored.rule),
        "version": stored.version,
        "created": format_ts(stored.created_ms),
        "fired": state.fired,
        "last_fired": None if state.last_fired_ms is None else format_ts(state.last_fired_ms),
        "done": state.done,
    }


def _answer(stored: Any, status: int = 200) -> web.Response:
    response = web.json_response(_shown(stored), status=status)
    response.headers["ETag"] = stored.etag
    return response


@store_errors
async def create_rule(request: web.Request) -> web.StreamResponse:
    """POST: a new rule; 201 with its ETag and Location."""
    owner = require_owner(request)
    rule = await _rule(request, owner)
    limit = request.app[CONFIG].alerts.max_rules_per_owner
    stored = await request.app[ALERT_ENGINE].create(owner, rule, max_rules=limit)
    response = _answer(stored, 201)
    response.headers["Location"] = f"{PREFIX}/{stored.id}"
    return response


@store_errors
async def list_rules(request: web.Request) -> web.StreamResponse:
    """GET: the caller's rules, oldest first."""
    rules = await request.app[ALERT_STORE].owned(require_owner(request))
    return web.json_response({"rules": [_shown(r) for r in rules]})


@store_errors
async def get_rule(request: web.Request) -> web.StreamResponse:
    """GET one rule, with its ETag."""
    owner, rule_id = require_owner(request), _rule_id(request)
    stored = await request.app[ALERT_STORE].get(owner, rule_id)
    if stored is None:
        raise Problem(404, f"no alert rule {rule_id}")
    return _answer(stored)


@store_errors
async def update_rule(request: web.Request) -> web.StreamResponse:
    """PUT: replace a rule's definition (If-Match: 412 if it changed); its state restarts."""
    owner, rule_id = require_owner(request), _rule_id(request)
    version = _if_match(request, rule_id)
    rule = await _rule(request, owner)
    stored = await request.app[ALERT_ENGINE].replace(owner, rule_id, rule, version=version)
    return _answer(stored)


@store_errors
async def delete_rule(request: web.Request) -> web.StreamResponse:
    """DELETE a rule with its firings and undelivered notifications."""
    owner, rule_id = require_owner(request), _rule_id(request)
    version = _if_match(request, rule_id)
    await request.app[ALERT_ENGINE].delete(owner, rule_id, version=version)
    return web.Response(status=204)


@store_errors
async def list_firings(request: web.Request) -> web.StreamResponse:
    """GET a rule's firings, newest first (``limit``, default 100)."""
    owner, rule_id = require_owner(request), _rule_id(request)
    limit = int_param(request, "limit", 100, 1, MAX_FIRINGS)
    alerts = request.app[ALERT_STORE]
    if await alerts.get(owner, rule_id) is None:
        raise Problem(404, f"no alert rule {rule_id}")
    firings = await alerts.firings(owner, rule_id, limit)
    return web.json_response({"firings": [f.to_json() for f in firings]})


@store_errors
async def test_fire(request: web.Request) -> web.StreamResponse:
    """POST: record a test firing (no tick) and queue its delivery like a real one."""
    owner, rule_id = require_owner(request), _rule_id(request)
    alerts = request.app[ALERT_STORE]
    stored = await alerts.get(owner, rule_id)
    if stored is None:
        raise Problem(404, f"no alert rule {rule_id}")
    now_ms = round(request.app[CLOCK].time() * 1000)
    payload = {
        "test": True,
        "pair": stored.rule.pair,
        "kind": str(stored.rule.kind),
        "detail": f"test firing of alert rule {rule_id}",
    }
    firing = await alerts.test_fire(owner, rule_id, payload, now_ms)
    request.app[ON_FIRED](owner, firing)
    return web.json_response(firing.to_json(), status=201)
