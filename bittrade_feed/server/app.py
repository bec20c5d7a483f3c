"""The aiohttp application: state under typed keys, lifecycles in ``cleanup_ctx``, routes.

``create_app(config)`` builds everything from the config; tests inject a clock, a
metrics registry and base URLs (through the config) instead of patching anything.
Start-up order is session, store, hub, tick log, fetcher; teardown runs in reverse, so the
fetch loop stops before the database closes and no accepted price is lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from bittrade_feed import __version__
from bittrade_feed.auth.authenticator import Authenticator
from bittrade_feed.auth.handlers import add_auth_routes
from bittrade_feed.auth.policy import granted_pairs
from bittrade_feed.auth.policy import install as install_auth
from bittrade_feed.auth.principal import principal_of
from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.clock import Clock, SystemClock
from bittrade_feed.config import Config
from bittrade_feed.errors import StoreError
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.feed.ticklog import TickLog
from bittrade_feed.models import SIMULATED_SOURCE, FeedStatus, format_ts
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.ops.supervise import Supervisor
from bittrade_feed.server.alerts import add_alert_routes, alerts_ctx, cluster_alerts_ctx
from bittrade_feed.server.badinput import install as install_bad_input_log
from bittrade_feed.server.cluster import CLUSTER_FETCH, cluster_checks, cluster_ctx, get_cluster
from bittrade_feed.server.cors import install as install_cors
from bittrade_feed.server.cors import preflight_middleware
from bittrade_feed.server.dashboard import add_dashboard_routes
from bittrade_feed.server.pairs import apply_pair_changes
from bittrade_feed.server.params import int_param, requested_pairs, time_param
from bittrade_feed.server.problems import Problem, problem_middleware
from bittrade_feed.server.refusals import install as install_refusals_log
from bittrade_feed.server.state import (
    AUTH,
    CLOCK,
    CONFIG,
    FETCH_TASK,
    FETCHER,
    HUB,
    METRICS,
    SESSION,
    STORE,
    SUPERVISOR,
    TICKLOG,
    TLS,
    current_config,
)
from bittrade_feed.server.streams import price_stream, ws_stream
from bittrade_feed.server.tls import server_context
from bittrade_feed.server.webhooks import add_webhook_routes
from bittrade_feed.store.sqlite import Store

log = structlog.get_logger("bittrade_feed.server.app")

FETCH_ENABLED = web.AppKey("fetch_enabled", bool)

RETENTION_PERIOD = 3600.0
MAX_RANGE_LIMIT = 10_000
DEFAULT_RANGE_LIMIT = 1000
DEFAULT_RANGE_SECONDS = 3600


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    fetch: bool = True,
) -> web.Application:
    """Build the daemon's application; ``fetch=False`` leaves the fetch loop stopped."""
    # The preflight answer comes before the auth middleware (appended by install_auth):
    # browsers never send credentials with one.
    app = web.Application(middlewares=[problem_middleware, preflight_middleware])
    app[CONFIG] = config
    app[CLOCK] = clock = clock or SystemClock()
    app[METRICS] = Metrics(registry if registry is not None else new_registry())
    # In a cluster the fetch loop runs only on the leader, started by cluster_ctx.
    app[FETCH_ENABLED] = fetch and not config.cluster.enabled
    app[CLUSTER_FETCH] = fetch
    # Every background task starts through it; the CLI sets its on_fatal to exit 1.
    app[SUPERVISOR] = Supervisor(app[METRICS].task_crashes, clock.sleep, clock.monotonic)

    install_bad_input_log(app)
    install_refusals_log(app)
    install_cors(app)
    tls = server_context(config.server)  # a ConfigError naming the key: the CLI exits 78
    if tls is not None:
        app[TLS] = tls
    if config.auth.enabled:
        # Built here so a secret file that went bad since the config was read is a
        # ConfigError too (the CLI exits 78 on it).
        install_auth(app, Authenticator(config.auth, clock))
    app.cleanup_ctx.extend(
        [
            _session_ctx,
            _store_ctx,
            _hub_ctx,
            _ticklog_ctx,
            alerts_ctx,
            _fetcher_ctx,
            cluster_ctx,
            cluster_alerts_ctx,
            _retention_ctx,
        ]
    )
    app.on_shutdown.append(_on_shutdown)
    app.add_routes(
        [
            web.get("/api/price", get_price),
            web.get("/api/prices", get_prices),
            web.get("/api/sources", get_sources),
            web.get("/api/price-stream", price_stream),
            web.get("/api/ws", ws_stream),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_handler),
            web.get("/api/cluster", get_cluster),
        ]
    )
    add_auth_routes(app)
    add_alert_routes(app)
    add_webhook_routes(app)
    add_dashboard_routes(app)
    return app


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=32, ttl_dns_cache=300)
    headers = {"User-Agent": f"bittrade-feed/{__version__}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        app[SESSION] = session
        yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    database = app[CONFIG].database
    store = await Store.open(database.path, timeout=database.timeout)
    app[STORE] = store
    try:
        yield
    finally:
        await store.close()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    config = app[CONFIG]
    hub = Hub(config.stream, app[CLOCK], app[METRICS], store)
    latest = await store.latest(config.fetch.pairs)
    hub.load(await store.recent(config.stream.replay_limit), latest, await store.max_id())
    app[HUB] = hub
    if AUTH in app:
        hub.still_valid = app[AUTH].still_valid
    supervisor = app[SUPERVISOR]
    hub.run_callback = supervisor.call
    app[METRICS].task_crashes.labels("hub-flush")  # at 0 before any crash, for alerts
    # Heartbeats carry no data: a crashed timer is safe to restart.
    timer = supervisor.spawn("hub-heartbeat", hub.run_timer, restart=True)
    yield
    await supervisor.cancel(timer)
    await hub.stop()


async def _ticklog_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    # Everything stored before start is already known to the hub (ring and snapshot).
    ticklog = TickLog(store, app[METRICS], app[CLOCK], last_id=await store.max_id())
    ticklog.add_listener(app[HUB].publish, name="hub")
    app[TICKLOG] = ticklog
    yield


async def _fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    hub, metrics, sink = app[HUB], app[METRICS], app[TICKLOG].append

    def on_status(status: FeedStatus) -> None:
        # Flagged here, from the config in force, so even "no price yet" says it is fake
        # (.get: a reload may drop the pair while a cycle of the old config still runs).
        config = current_config(app) if FETCHER in app else app[CONFIG]
        fake = SIMULATED_SOURCE in config.fetch.sources.get(status.pair, ())
        hub.publish_status(replace(status, simulated=fake))

    fetcher = Fetcher(app[CONFIG], app[SESSION], app[CLOCK], metrics, sink, on_status, hub.latest)
    app[FETCHER] = fetcher
    # Start-up is the reload from no pairs: every pair's stored price and first status.
    apply_pair_changes(app, (), dict(hub.latest))
    task = None
    if app[FETCH_ENABLED]:
        # Fatal when it crashes: a daemon serving ever older prices must not look alive.
        task = app[SUPERVISOR].spawn("fetch-loop", fetcher.run, restart=False)
        app[FETCH_TASK] = task
    yield
    if task is not None:
        await app[SUPERVISOR].cancel(task)


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    days = app[CONFIG].database.retention_days
    supervisor = app[SUPERVISOR]
    task = None
    if days:
        task = supervisor.spawn("retention", lambda: _retention_loop(app, days), restart=True)
    yield
    if task is not None:
        await supervisor.cancel(task)


async def _retention_loop(app: web.Application, days: float) -> None:
    """Hourly, delete prices older than ``days`` (each pair's latest is always kept)."""
    clock, store = app[CLOCK], app[STORE]
    while True:
        cutoff_ms = round((clock.time() - days * 86400) * 1000)
        try:
            deleted = await store.delete_older_than(cutoff_ms)
        except StoreError as exc:
            log.error("retention failed", reason=str(exc))
        else:
            if deleted:
                log.info("retention", deleted=deleted, older_than_days=days)
        await clock.sleep(RETENTION_PERIOD)


async def _on_shutdown(app: web.Application) -> None:
    # Streams never end by themselves: close them so graceful shutdown is quick.
    app[HUB].close_all("shutdown")


def _pair(request: web.Request) -> str:
    pairs = requested_pairs(request, "pair", single=True)
    return granted_pairs(request, principal_of(request), pairs)[0]


def _status(request: web.Request, pair: str) -> FeedStatus:
    return request.app[FETCHER].pairs[pair].status


def _age(app: web.Application, pair: str) -> float | None:
    """Seconds since the pair's latest price was accepted, on the monotonic clock."""
    return app[FETCHER].age(pair)


def _config(request: web.Request) -> Config:
    return current_config(request.app)


async def get_price(request: web.Request) -> web.Response:
    """The latest price of one pair (``?pair=``, default the first configured)."""
    pair = _pair(request)
    tick = request.app[HUB].latest.get(pair)
    status = _status(request, pair)
    if tick is None:
        # Before the first price the status reason is "no price yet": do not say it twice.
        why = status.reason if "no price" not in status.reason else ""
        raise Problem(
            503,
            f"no price for {pair} yet: {why or 'no fetch has reached a quorum'}"
            " (GET /api/sources shows each source's last error)",
            headers={"Retry-After": str(int(_config(request).fetch.interval))},
            pair=pair,
        )
    age = _age(request.app, pair) or 0.0
    return web.json_response(
        {
            **tick.to_json(),
            # "state" says live, stale or suspect; "stale" stays for older clients.
            "state": status.state,
            "stale": status.state == "stale",
            "age_seconds": round(age, 3),
        }
    )


async def get_prices(request: web.Request) -> web.Response:
    """Stored prices of one pair between ``since`` and ``until`` (RFC 3339), oldest first."""
    pair = _pair(request)
    now_ms = round(request.app[CLOCK].time() * 1000)
    until = time_param(request, "until", now_ms + 1)
    since = time_param(request, "since", max(0, until - DEFAULT_RANGE_SECONDS * 1000))
    if since >= until:
        raise Problem(400, "since must be earlier than until", param="since")
    limit = int_param(request, "limit", DEFAULT_RANGE_LIMIT, 1, MAX_RANGE_LIMIT)
    ticks = await request.app[STORE].between(pair, since, until, limit)
    return web.json_response(
        {
            "pair": pair,
            "since": format_ts(since),
            "until": format_ts(until),
            "count": len(ticks),
            "truncated": len(ticks) == limit,
            "prices": [t.to_json() for t in ticks],
        }
    )


async def get_sources(request: web.Request) -> web.Response:
    """Each source's breaker state, last success and last error."""
    fetcher = request.app[FETCHER]
    config = fetcher.config
    out: list[dict[str, Any]] = []
    for name, health in fetcher.health.items():
        if name not in fetcher.sources:
            continue
        view = health.to_json()
        for key in ("last_success", "last_error"):
            if view[key] is not None:
                view[key] = format_ts(round(view[key] * 1000))
        view["pairs"] = [p for p in config.fetch.pairs if name in config.sources_for(p)]
        view["simulated"] = name == "simulated"
        out.append(view)
    return web.json_response({"sources": out})


async def healthz(request: web.Request) -> web.Response:
    """The process and its event loop answer, and no essential background task died."""
    failed = request.app[SUPERVISOR].failed
    if failed is not None:
        return web.json_response({"status": "failed", "detail": failed}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when every pair has a fresh price and the database takes writes.

    The database check is the writer's own latest outcome: a probe never touches the
    writer's connection, and never waits on a stuck database.
    """
    config = _config(request)
    checks: dict[str, dict[str, Any]] = {}
    for pair in config.fetch.pairs:
        age = _age(request.app, pair)
        ok = age is not None and age < config.fetch.stale_after
        checks[f"price:{pair}"] = {
            "ok": ok,
            "detail": "no price yet"
            if age is None
            else f"latest price is {age:.1f} s old (limit {config.fetch.stale_after:g} s)",
        }
    status = request.app[STORE].write_status()
    checks["database"] = {"ok": status.ok, "detail": status.detail}
    checks.update(cluster_checks(request.app))
    failed = request.app[SUPERVISOR].failed
    if failed is not None:
        checks["tasks"] = {"ok": False, "detail": failed}
    ready = all(c["ok"] for c in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    """Prometheus exposition (text or OpenMetrics, by ``Accept``)."""
    metrics = request.app[METRICS]
    store = request.app[STORE]
    # Values the writer keeps current: a scrape never waits on SQLite.
    metrics.store_rows.set(store.rows)
    metrics.store_size.set(store.size_bytes())
    metrics.store_writable.set(1 if store.write_status().ok else 0)
    return await metrics.exposition(request)
