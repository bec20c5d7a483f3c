"""Every Prometheus series the daemon exports, in one place.

Names follow the Prometheus conventions: ``bittrade_feed_`` prefix, base units,
``_total`` on counters, label values drawn from fixed sets (configured sources and
pairs, the outcome words of ``errors.SOURCE_ERROR_REASONS``), so cardinality is bounded.
The registry is injected so tests get a fresh one each.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler

from bittrade_feed import __version__
from bittrade_feed.auth.principal import FAILURE_REASONS
from bittrade_feed.errors import SOURCE_ERROR_REASONS

UPSTREAM_OUTCOMES = ("ok", *SOURCE_ERROR_REASONS)
CIRCUIT_STATES = ("closed", "open", "half_open", "disabled")
TRANSPORTS = ("sse", "ws")
CLOSE_REASONS = (
    "client",
    "slow",
    "shutdown",
    "limit",
    "lifetime",
    "resubscribe",
    "abuse",
    "removed",
    "expired",
    "revoked",
    "unavailable",
)
SKIP_REASONS = ("no_quorum", "jump_held", "store_error")
JUMP_OUTCOMES = ("held", "confirmed", "rejected")
DROP_STAGES = ("publish", "subscriber")
RESYNC_REASONS = ("gap", "ahead", "replay_limit", "retention")
RESUME_SOURCES = ("ring", "sqlite", "resync")
REFUSAL_REASONS = ("auth", "scope", "origin", "address", "rate", "credential", "global")
"""Why a request or stream was refused (issue 13; auth and limits share the counter)."""
AUTH_KINDS = ("anonymous", "key", "jwt")
RESUME_WAITS = ("caught_up", "late")


def new_registry() -> CollectorRegistry:
    """A registry with the standard process and platform collectors, as the default has."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class Metrics:
    """The daemon's instruments, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.exposition = make_aiohttp_handler(registry)
        """The /metrics handler (text or OpenMetrics by ``Accept``), built once."""
        r = registry
        Info("bittrade_feed_build", "Version of this daemon.", registry=r).info(
            {"version": __version__, "python_version": platform.python_version()}
        )
        self.upstream_requests = Counter(
            "bittrade_feed_upstream_requests",
            "Exchange requests by source and outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "bittrade_feed_upstream_request_duration_seconds",
            "Time for one exchange request, retries counted separately.",
            ["source"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.circuit_state = Gauge(
            "bittrade_feed_source_circuit_state",
            "1 for the circuit-breaker state each source is in.",
            ["source", "state"],
            registry=r,
        )
        self.source_last_success = Gauge(
            "bittrade_feed_source_last_success_timestamp_seconds",
            "Unix time of each source's last valid quote.",
            ["source"],
            registry=r,
        )
        self.ticks = Counter(
            "bittrade_feed_ticks", "Prices published, by pair.", ["pair"], registry=r
        )
        self.ticks_skipped = Counter(
            "bittrade_feed_ticks_skipped",
            "Intervals that published no price, by pair and reason.",
            ["pair", "reason"],
            registry=r,
        )
        self.outliers = Counter(
            "bittrade_feed_outliers",
            "Quotes dropped for straying from the median, by source.",
            ["source"],
            registry=r,
        )
        self.jumps = Counter(
            "bittrade_feed_jumps",
            "Prices beyond the jump guard, by pair and outcome: held, confirmed, rejected.",
            ["pair", "outcome"],
            registry=r,
        )
        self.last_tick = Gauge(
            "bittrade_feed_last_tick_timestamp_seconds",
            "Unix time of the latest published price, by pair.",
            ["pair"],
            registry=r,
        )
        self.last_price = Gauge(
            "bittrade_feed_last_price",
            "Latest published price, in the pair's quote currency.",
            ["pair"],
            registry=r,
        )
        self.stale = Gauge(
            "bittrade_feed_stale",
            "1 while a pair's price is stale (no quorum for longer than stale_after).",
            ["pair"],
            registry=r,
        )
        self.subscribers = Gauge(
            "bittrade_feed_subscribers",
            "Connected subscribers by transport.",
            ["transport"],
            registry=r,
        )
        self.connections_opened = Counter(
            "bittrade_feed_connections_opened",
            "Subscriber connections accepted, by transport.",
            ["transport"],
            registry=r,
        )
        self.connections_closed = Counter(
            "bittrade_feed_connections_closed",
            "Subscriber connections closed, by transport and reason.",
            ["transport", "reason"],
            registry=r,
        )
        self.bad_requests = Counter(
            "bittrade_feed_bad_requests",
            "Requests refused with 400 before routing: unparsable line or headers, or too long.",
            registry=r,
        )
        self.events_sent = Counter(
            "bittrade_feed_events_sent",
            "Events handed to subscribers, by transport.",
            ["transport"],
            registry=r,
        )
        self.bytes_sent = Counter(
            "bittrade_feed_sent_bytes",
            "Bytes handed to subscriber sockets, by transport.",
            ["transport"],
            registry=r,
        )
        self.broadcast_duration = Histogram(
            "bittrade_feed_broadcast_duration_seconds",
            "Time to hand one event to every subscriber.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.events_dropped = Counter(
            "bittrade_feed_events_dropped",
            "Price events not written because their id was not above the last one written "
            "(a duplicate or older id), by where: the hub's input or one subscriber.",
            ["stage"],
            registry=r,
        )
        self.tick_gaps = Counter(
            "bittrade_feed_tick_gaps",
            "Ticks whose id skipped ids this daemon never received (each became a resync).",
            registry=r,
        )
        self.resyncs = Counter(
            "bittrade_feed_resyncs",
            "Resync events sent to subscribers, by reason.",
            ["reason"],
            registry=r,
        )
        self.resumes = Counter(
            "bittrade_feed_resumes",
            "Streams opened with a resume point, by what answered it: the in-memory ring, "
            "this node's SQLite, or a resync (in a cluster each node replays from its own "
            "replica of the log).",
            ["source"],
            registry=r,
        )
        self.resumes_waited = Counter(
            "bittrade_feed_resume_waits",
            "Resume points ahead of this daemon that waited for its log to catch up "
            "(cluster only): caught_up replayed normally, late got resync ahead.",
            ["outcome"],
            registry=r,
        )
        self.store_write_duration = Histogram(
            "bittrade_feed_store_write_duration_seconds",
            "Time to commit one price to SQLite.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=r,
        )
        self.store_write_errors = Counter(
            "bittrade_feed_store_write_errors", "Failed price commits.", registry=r
        )
        self.task_crashes = Counter(
            "bittrade_feed_task_crashes",
            "Background tasks that crashed (then restarted, or ended the daemon).",
            ["task"],
            registry=r,
        )
        self.store_writable = Gauge(
            "bittrade_feed_store_writable",
            "1 while the database takes writes (judged from the latest commit), else 0.",
            registry=r,
        )
        self.tick_listener_errors = Counter(
            "bittrade_feed_tick_listener_errors",
            "Committed ticks a listener (hub, cluster link, alerts) raised on, by listener.",
            ["listener"],
            registry=r,
        )
        self.store_rows = Gauge(
            "bittrade_feed_store_rows", "Prices kept in the database.", registry=r
        )
        self.store_size = Gauge(
            "bittrade_feed_store_size_bytes", "Size of the database file.", registry=r
        )
        self.refusals = Counter(
            "bittrade_feed_refusals",
            "Requests refused before they were served, by reason: auth (401), scope (403), "
            "origin, address, rate, credential (429) and global (503).",
            ["reason"],
            registry=r,
        )
        self.auth_failures = Counter(
            "bittrade_feed_auth_failures",
            "Credentials refused, by why (missing, expired, revoked, bad_token, ...).",
            ["reason"],
            registry=r,
        )
        self.streams_opened = Counter(
            "bittrade_feed_streams_opened",
            "Streams opened, by transport and auth kind (anonymous, key, jwt).",
            ["transport", "auth"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)
        for reason in FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for transport in TRANSPORTS:
            for kind in AUTH_KINDS:
                self.streams_opened.labels(transport, kind)
        for stage in DROP_STAGES:
            self.events_dropped.labels(stage)
        for reason in RESYNC_REASONS:
            self.resyncs.labels(reason)
        for source in RESUME_SOURCES:
            self.resumes.labels(source)
        for outcome in RESUME_WAITS:
            self.resumes_waited.labels(outcome)
        for transport in TRANSPORTS:
            self.subscribers.labels(transport)
            self.connections_opened.labels(transport)
            self.events_sent.labels(transport)
            self.bytes_sent.labels(transport)
            for reason in CLOSE_REASONS:
                self.connections_closed.labels(transport, reason)

    def declare(self, pairs: Iterable[str], sources: Iterable[str]) -> None:
        """Create every labelled series up front, so absent means zero, not unknown.

        Not the timestamps and the last price: their zero would be a time (1970, so
        ``time() - gauge`` is 56 years) or a price. They appear with their first value.
        """
        for pair in pairs:
            self.ticks.labels(pair)
            self.stale.labels(pair)
            for reason in SKIP_REASONS:
                self.ticks_skipped.labels(pair, reason)
            for outcome in JUMP_OUTCOMES:
                self.jumps.labels(pair, outcome)
        for source in sources:
            self.upstream_duration.labels(source)
            self.outliers.labels(source)
            for outcome in UPSTREAM_OUTCOMES:
                self.upstream_requests.labels(source, outcome)

    def set_circuit(self, source: str, state: str) -> None:
        """Mark ``state`` as the one current state of ``source``'s breaker."""
        for s in CIRCUIT_STATES:
            self.circuit_state.labels(source, s).set(1 if s == state else 0)


# --- cluster (issue 12) -------------------------------------------------------------------
REDIS_COMMANDS = ("lease", "publish", "read", "release")
"""What the cluster asks Redis, as a bounded label."""


class ClusterMetrics:
    """The ``bittrade_feed_cluster_*`` series; registered only when ``[cluster]`` is set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.leader = Gauge(
            "bittrade_feed_cluster_leader", "1 while this daemon holds the lease.", registry=r
        )
        self.leader_tasks = Gauge(
            "bittrade_feed_cluster_leader_task",
            "1 while this daemon runs the leader task (fetch-loop, alerts, alerts-outbox).",
            ["task"],
            registry=r,
        )
        self.term = Gauge(
            "bittrade_feed_cluster_term", "Fencing term of the current lease holder.", registry=r
        )
        self.leader_changes = Counter(
            "bittrade_feed_cluster_leader_changes",
            "Times this daemon saw another lease holder.",
            registry=r,
        )
        self.fenced = Counter(
            "bittrade_feed_cluster_fenced_publishes",
            "Publishes Redis refused because this daemon no longer held the lease.",
            registry=r,
        )
        self.redis_errors = Counter(
            "bittrade_feed_cluster_redis_errors",
            "Redis commands that failed (timeout, connection, error reply), by command.",
            ["command"],
            registry=r,
        )
        self.redis_duration = Histogram(
            "bittrade_feed_cluster_redis_command_duration_seconds",
            "Round-trip time of lease and publish commands.",
            ["command"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.lag_ids = Gauge(
            "bittrade_feed_cluster_replication_lag_ids",
            "Entries in the shared log not yet committed here.",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "bittrade_feed_cluster_replication_lag_seconds",
            "Age of the newest tick when it was committed here.",
            registry=r,
        )
        self.applied = Counter(
            "bittrade_feed_cluster_applied_ticks",
            "Ticks read from the shared log and committed here.",
            registry=r,
        )
        self.holes = Counter(
            "bittrade_feed_cluster_holes",
            "Ranges of ids missing from the shared log (resumes into them get resync).",
            registry=r,
        )
        self.epoch_changes = Counter(
            "bittrade_feed_cluster_epoch_changes",
            "Times the shared log restarted under a new epoch (Redis lost data).",
            registry=r,
        )
        self.ready = Gauge(
            "bittrade_feed_cluster_ready",
            "1 while Redis answers and this daemon keeps up with the shared log.",
            registry=r,
        )
        for command in REDIS_COMMANDS:
            self.redis_errors.labels(command)
            self.redis_duration.labels(command)


# --- end cluster --------------------------------------------------------------------------


# --- alerts (issue 14) --------------------------------------------------------------------
class AlertMetrics:
    """The ``bittrade_feed_alert_*`` series; registered only when ``alerts.enabled``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rules = Gauge("bittrade_feed_alert_rules", "Alert rules loaded.", registry=r)
        self.firings = Counter("bittrade_feed_alert_firings", "Alert firings recorded.", registry=r)
        self.commit_errors = Counter(
            "bittrade_feed_alert_commit_errors",
            "Attempts to save alert firings and states that failed (retried).",
            registry=r,
        )
        self.lag = Gauge(
            "bittrade_feed_alert_lag_ticks",
            "Committed ticks the alert engine has not evaluated yet.",
            registry=r,
        )
        self.deliveries = Counter(
            "bittrade_feed_alert_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed, gone, refused).",
            ["outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "bittrade_feed_alert_delivery_latency_seconds",
            "Seconds from a firing to its webhook's successful delivery.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.outbox_depth = Gauge(
            "bittrade_feed_alert_outbox_depth",
            "Webhook deliveries pending in the outbox.",
            registry=r,
        )
        self.endpoints_disabled = Counter(
            "bittrade_feed_alert_endpoints_disabled",
            "Webhook endpoints disabled because the receiver answered 410 Gone.",
            registry=r,
        )


# --- end alerts ---------------------------------------------------------------------------
