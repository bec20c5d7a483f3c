"""The TOML config file, read into frozen dataclasses; every fault names its key.

Every key is optional; ``config.example.toml`` lists them all with their defaults.
``load_config`` collects *all* faults before raising one ``ConfigError``, so an operator
fixes a file in one pass instead of one key per restart.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from bittrade_feed.auth.settings import AuthConfig, build_auth
from bittrade_feed.config_checks import (
    Bad,
    IPNetwork,
    Reader,
    boolean,
    choice,
    file_path,
    host,
    host_port,
    integer,
    key_prefix,
    network,
    node_name,
    number,
    origin,
    pair_name,
    redis_url,
    string,
    url,
)
from bittrade_feed.errors import ConfigError
from bittrade_feed.sources import REAL_SOURCES, SOURCES

DB_FILENAME = "bittrade-feed.sqlite3"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
STRATEGIES = ("median", "failover")
PROXY_HEADERS = ("x-forwarded-for", "forwarded")
SOMAXCONN = "/proc/sys/net/core/somaxconn"
FALLBACK_BACKLOG = 4096
"""Listen backlog when somaxconn cannot be read (Linux's default since 5.4)."""
MIN_BACKLOG, MAX_BACKLOG = 128, 65535
MIN_INTERVAL = 0.01
"""Shortest interval (100 ticks/s): for the simulated source and benchmarks; real exchanges
rate-limit far above it."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the HTTP API listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    metrics_host: str = ""
    """Serve /metrics on its own address too (empty: only on the main listener)."""
    metrics_port: int = 0
    """The port of that second listener; set both or neither."""
    shutdown_timeout: float = 10.0
    backlog: int = field(default_factory=lambda: default_backlog())  # noqa: PLW0108 - below
    """Connections the kernel queues before accepting (the TCP listener only)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, so several daemons on one machine share the port."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Peers whose ``proxy_header`` names the client (addresses or CIDR blocks)."""
    proxy_header: str = "x-forwarded-for"
    """Which header trusted proxies set: ``x-forwarded-for`` or ``forwarded`` (RFC 7239)."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins on other sites allowed to read the API with credentials (exact)."""
    tls_cert: Path | None = None
    """PEM certificate chain: serve HTTPS on the API listener (with ``tls_key``)."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where prices are kept and for how long."""

    path: Path = field(default_factory=lambda: default_db_path())  # noqa: PLW0108 - defined below
    retention_days: float = 0.0
    """Delete prices older than this many days (0: keep every price)."""
    timeout: float = 5.0
    """Seconds any one database read or write may take before it fails."""


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """What to fetch and how often."""

    pairs: tuple[str, ...] = ("BTC-USD",)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per pair, the enabled sources in priority order."""
    interval: float = 30.0
    request_timeout: float = 5.0
    """Seconds one request may take; the file's default is 5, or the interval if shorter."""
    max_attempts: int = 3
    stale_after: float = 90.0
    """Seconds without a price before the feed is stale; the file default: 3 intervals, >= 90."""


@dataclass(frozen=True, slots=True)
class AggregationConfig:
    """How several quotes become one price."""

    strategy: str = "median"
    quorum: int = 2
    max_deviation: Decimal = Decimal("0.01")
    jump_guard: Decimal = Decimal("0.15")
    """Hold a price further than this fraction from the last published one (0: off)."""
    jump_confirmations: int = 2
    """Further cycles that must agree with a held jump before it is published."""


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    """Per-exchange overrides (base URL for tests and proxies; the simulator's knobs)."""

    base_url: str | None = None
    seed: int = 0
    volatility: float = 0.0005


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How prices reach subscribers."""

    heartbeat: float = 15.0
    retry_ms: int = 3000
    max_subscribers: int = 10_000
    max_buffer_bytes: int = 256 * 1024
    replay_limit: int = 1000
    max_lifetime: float = 0.0
    """Close a stream after about this many seconds, with jitter (0: never)."""
    coalesce_ms: int = 0
    """Batch events for up to this many ms into one write per subscriber (0: send at once)."""
    ws_ops_burst: int = 10
    """WebSocket messages a client may send at once before the rate applies."""
    ws_ops_per_second: float = 2.0
    """WebSocket messages per second a client may send after its burst; more closes it (1008)."""
    max_per_address: int = 20
    """Streams open at once from one client address (IPv6: one /64); 0: no limit."""
    max_per_credential: int = 100
    """Streams open at once with one credential (anonymous is never counted); 0: no limit."""
    connect_burst: int = 40
    """New streams one address may open at once before ``connect_per_second``; 0: no limit."""
    connect_per_second: float = 5.0
    """New streams per second one address may open after its burst."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log verbosity and rendering."""

    level: str = "info"
    format: str = "auto"


# --- [cluster] (issue 12) ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several daemons on one Redis: one fetches, all serve (off when no Redis is named)."""

    redis_url: str = ""
    """``redis://``, ``rediss://`` or ``unix://``; with Sentinel it only carries options."""
    sentinels: tuple[str, ...] = ()
    """Sentinel addresses as ``host:port``; the master is looked up by ``master_name``."""
    master_name: str = ""
    node_name: str = ""
    """This daemon's name in the cluster ("": host name and process id)."""
    lease_ms: int = 5000
    """How long a leadership lease lasts without renewal."""
    feed_key: str = "bt"
    """Prefix (and Redis Cluster hash tag) of this feed's keys."""
    stream_maxlen: int = 100_000
    """Entries the shared log keeps: how far behind a node may fall and still catch up."""

    @property
    def enabled(self) -> bool:
        """Whether this daemon is part of a cluster."""
        return bool(self.redis_url or self.sentinels)


# --- end [cluster] ------------------------------------------------------------------------


# --- [alerts] (issue 14) ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Price alert rules evaluated on every committed tick, delivered on streams and webhooks."""

    enabled: bool = False
    """Off by default: turning it on opens an API that stores rules and creates webhooks."""
    max_rules_per_owner: int = 100
    checkpoint_seconds: float = 10.0
    """How often rule states changed by ticks that fired nothing are saved; a restart
    replays the stored ticks since the last save, so this only bounds that replay."""
    max_endpoints_per_owner: int = 20
    rotation_overlap: float = 86_400.0
    """Seconds the old secret of a rotated webhook endpoint keeps signing beside the new."""
    webhook_allow_http: bool = False
    """Plain http webhook URLs (a receiver on a trusted network, or tests)."""
    webhook_allow: tuple[IPNetwork, ...] = ()
    """Networks webhooks may reach although they are not public (loopback in tests)."""
    webhook_timeout: float = 10.0
    """Seconds one webhook delivery attempt may take, connect to last byte read."""
    max_attempts: int = 10
    """Webhook delivery attempts before the delivery is marked failed."""
    retry_base: float = 5.0
    retry_cap: float = 3600.0
    """Backoff before attempt n+1: uniform in [0, min(cap, base * 2**n)] (full jitter)."""


# --- end [alerts] -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """The whole daemon configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    exchanges: dict[str, ExchangeConfig] = field(default_factory=dict)
    stream: StreamConfig = field(default_factory=StreamConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def sources_for(self, pair: str) -> tuple[str, ...]:
        """The enabled sources of ``pair`` in priority order."""
        return self.fetch.sources[pair]

    def exchange(self, name: str) -> ExchangeConfig:
        """The overrides for one exchange (defaults when the file has none)."""
        return self.exchanges.get(name, ExchangeConfig())


def default_db_path() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``./data``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state or "data") / DB_FILENAME


def default_backlog(somaxconn: str = SOMAXCONN) -> int:
    """The kernel's cap on a listen queue (``somaxconn``), or ``FALLBACK_BACKLOG``."""
    try:
        text = Path(somaxconn).read_text().strip()
    except OSError:
        return FALLBACK_BACKLOG
    if not (text.isascii() and text.isdigit() and len(text) < 10):
        return FALLBACK_BACKLOG
    # A backlog above somaxconn is cut to it by the kernel; one below 128 is never right.
    return max(MIN_BACKLOG, min(int(text), MAX_BACKLOG))


def default_sources(pair: str) -> tuple[str, ...]:
    """Every real exchange that lists the pair; never the simulator."""
    return tuple(name for name in REAL_SOURCES if SOURCES[name]().supports(pair))


def load_config(path: Path | None) -> Config:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return parse_config({})
    where = str(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([(where, "file not found")]) from None
    except OSError as exc:
        raise ConfigError([(where, f"cannot read: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(where, f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([(where, "not valid TOML: the file is not UTF-8 text")]) from None
    except RecursionError:
        raise ConfigError([(where, "lists or tables are nested too deeply")]) from None
    except ValueError:
        # tomllib's int() of more than 4,300 digits; no key of ours takes such a number.
        raise ConfigError([(where, "a number has more than 4300 digits")]) from None
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a decoded TOML document into a ``Config``."""
    reader = Reader(raw)
    config = _build(reader)
    reader.finish()
    return config


_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - compared against, never bound


def _build(r: Reader) -> Config:
    server = ServerConfig(
        host=r.get("server.host", "127.0.0.1", host),
        port=r.get("server.port", 8080, integer(1, 65535)),
        metrics_host=r.get("server.metrics_host", "", partial(host, optional=True)),
        metrics_port=r.get("server.metrics_port", 0, integer(0, 65535)),
        shutdown_timeout=r.get("server.shutdown_timeout", 10.0, number(0.1, 300)),
        backlog=r.get("server.backlog", default_backlog(), integer(1, MAX_BACKLOG)),
        reuse_port=r.get("server.reuse_port", False, boolean),
        trusted_proxies=tuple(r.items("server.trusted_proxies", network) or ()),
        proxy_header=r.get("server.proxy_header", "x-forwarded-for", choice(PROXY_HEADERS)),
        cors_origins=tuple(r.items("server.cors_origins", origin) or ()),
        tls_cert=r.get("server.tls_cert", None, file_path),
        tls_key=r.get("server.tls_key", None, file_path),
    )
    _check_metrics_listener(r, server)
    _check_tls_pair(r, server)
    database = DatabaseConfig(
        path=r.get("database.path", default_db_path(), _db_path),
        retention_days=r.get("database.retention_days", 0.0, number(0)),
        timeout=r.get("database.timeout", 5.0, number(0.05, 300)),
    )
    aggregation = AggregationConfig(
        strategy=r.get("aggregation.strategy", "median", choice(STRATEGIES)),
        quorum=r.get("aggregation.quorum", 2, integer(1, 50)),
        max_deviation=Decimal(
            str(r.get("aggregation.max_deviation", 0.01, number(0, 1, lo_open=True)))
        ),
        jump_guard=Decimal(str(r.get("aggregation.jump_guard", 0.15, number(0, 10)))),
        jump_confirmations=r.get("aggregation.jump_confirmations", 2, integer(1, 100)),
    )
    fetch = _build_fetch(r, aggregation)
    stream = StreamConfig(
        heartbeat=r.get("stream.heartbeat", 15.0, number(1, 300)),
        retry_ms=r.get("stream.retry_ms", 3000, integer(100, 600_000)),
        max_subscribers=r.get("stream.max_subscribers", 10_000, integer(1, 1_000_000)),
        max_buffer_bytes=r.get("stream.max_buffer_bytes", 256 * 1024, integer(4096, 1 << 30)),
        replay_limit=r.get("stream.replay_limit", 1000, integer(0, 100_000)),
        max_lifetime=r.get("stream.max_lifetime", 0.0, number(0)),
        coalesce_ms=r.get("stream.coalesce_ms", 0, integer(0, 1000)),
        ws_ops_burst=r.get("stream.ws_ops_burst", 10, integer(1, 10_000)),
        ws_ops_per_second=r.get("stream.ws_ops_per_second", 2.0, number(0.01, 10_000)),
        max_per_address=r.get("stream.max_per_address", 20, integer(0, 1_000_000)),
        max_per_credential=r.get("stream.max_per_credential", 100, integer(0, 1_000_000)),
        connect_burst=r.get("stream.connect_burst", 40, integer(0, 1_000_000)),
        connect_per_second=r.get("stream.connect_per_second", 5.0, number(0.01, 1_000_000)),
    )
    log = LogConfig(
        level=r.get("log.level", "info", choice(LOG_LEVELS)),
        format=r.get("log.format", "auto", choice(LOG_FORMATS)),
    )
    return Config(
        server,
        database,
        fetch,
        aggregation,
        _build_exchanges(r),
        stream,
        log,
        cluster=_build_cluster(r),
        auth=build_auth(r),
        alerts=_build_alerts(r),
    )


# --- [cluster] (issue 12) ---------------------------------------------------------------
def _build_cluster(r: Reader) -> ClusterConfig:
    cluster = ClusterConfig(
        redis_url=r.get("cluster.redis_url", "", redis_url),
        sentinels=tuple(r.items("cluster.sentinels", host_port) or ()),
        master_name=r.get("cluster.master_name", "", string),
        node_name=r.get("cluster.node_name", "", node_name),
        lease_ms=r.get("cluster.lease_ms", 5000, integer(500, 600_000)),
        feed_key=r.get("cluster.feed_key", "bt", key_prefix),
        stream_maxlen=r.get("cluster.stream_maxlen", 100_000, integer(100, 100_000_000)),
    )
    if cluster.sentinels and not cluster.master_name and not r.faulted("cluster.master_name"):
        r.fail("cluster.master_name", "must be set when cluster.sentinels is (e.g. mymaster)")
    elif cluster.master_name and not cluster.sentinels and not r.faulted("cluster.sentinels"):
        r.fail(
            "cluster.master_name",
            "is only used with cluster.sentinels; list them or remove this key",
        )
    return cluster


# --- end [cluster] ------------------------------------------------------------------------


# --- [alerts] (issue 14) ----------------------------------------------------------------
def _build_alerts(r: Reader) -> AlertsConfig:
    return AlertsConfig(
        enabled=r.get("alerts.enabled", False, boolean),
        max_rules_per_owner=r.get("alerts.max_rules_per_owner", 100, integer(1, 100_000)),
        checkpoint_seconds=r.get("alerts.checkpoint_seconds", 10.0, number(0.1, 3600)),
        max_endpoints_per_owner=r.get("alerts.max_endpoints_per_owner", 20, integer(1, 1000)),
        rotation_overlap=r.get("alerts.rotation_overlap", 86_400.0, number(0, 30 * 86_400)),
        webhook_allow_http=r.get("alerts.webhook_allow_http", False, boolean),
        webhook_allow=tuple(r.items("alerts.webhook_allow", network) or ()),
        webhook_timeout=r.get("alerts.webhook_timeout", 10.0, number(0.1, 300)),
        max_attempts=r.get("alerts.max_attempts", 10, integer(1, 100)),
        retry_base=r.get("alerts.retry_base", 5.0, number(0.01, 3600)),
        retry_cap=r.get("alerts.retry_cap", 3600.0, number(0.01, 86_400)),
    )


# --- end [alerts] -------------------------------------------------------------------------


def _check_metrics_listener(r: Reader, server: ServerConfig) -> None:
    # Both or neither: a port alone would leave us guessing which interface to expose.
    if server.metrics_host and not server.metrics_port:
        if not r.faulted("server.metrics_port"):
            r.fail("server.metrics_port", "must be set when server.metrics_host is (1 to 65535)")
    elif server.metrics_port and not server.metrics_host:
        if not r.faulted("server.metrics_host"):
            r.fail(
                "server.metrics_host",
                "must be set when server.metrics_port is (for example 127.0.0.1)",
            )
    elif server.metrics_port == server.port and (
        server.metrics_host == server.host
        or server.metrics_host in _WILDCARDS
        or server.host in _WILDCARDS
    ):
        r.fail(
            "server.metrics_port",
            f"{server.port} is already server.port on the same address; pick another port",
        )


def _check_tls_pair(r: Reader, server: ServerConfig) -> None:
    # Both or neither; whether the files load is checked when the listener is built
    # (server/tls.py), where a reload can keep the old pair instead.
    for have, need in (("tls_cert", "tls_key"), ("tls_key", "tls_cert")):
        key = f"server.{need}"
        if getattr(server, have) and not getattr(server, need) and not r.faulted(key):
            r.fail(key, f"must be set when server.{have} is (a PEM file path)")


def _build_fetch(r: Reader, aggregation: AggregationConfig) -> FetchConfig:
    pairs: list[str] = []
    listed = r.items("feed.pairs", pair_name)
    for i, pair in enumerate(listed or ()):
        if pair in pairs:
            r.fail(f"feed.pairs[{i}]", f"{pair} is listed twice; remove one")
        else:
            pairs.append(pair)
    if listed is None:
        pairs = ["BTC-USD"]
    elif not pairs and not r.faulted("feed.pairs"):
        r.fail("feed.pairs", 'must list at least one pair (for example ["BTC-USD"])')
    interval = r.get("feed.interval", 30.0, number(MIN_INTERVAL, 86400))
    fetch = FetchConfig(
        pairs=tuple(pairs),
        sources={},
        interval=interval,
        # Defaults follow a short interval, so `interval = 2` alone is a valid file.
        request_timeout=r.get(
            "feed.request_timeout", min(5.0, interval), number(MIN_INTERVAL, 120)
        ),
        max_attempts=r.get("feed.max_attempts", 3, integer(1, 10)),
        stale_after=r.get("feed.stale_after", max(90.0, 3 * interval), number(MIN_INTERVAL)),
    )
    if fetch.stale_after < fetch.interval:
        r.fail(
            "feed.stale_after",
            f"{fetch.stale_after:g} s is shorter than feed.interval ({fetch.interval:g} s); "
            "make it at least two or three intervals",
        )
    if fetch.request_timeout > fetch.interval:
        r.fail(
            "feed.request_timeout",
            f"{fetch.request_timeout:g} s is longer than feed.interval ({fetch.interval:g} s); "
            "lower it or raise feed.interval",
        )
    for pair in r.table("feed.sources"):
        if pair not in pairs:
            r.fail(
                f"feed.sources.{pair}", f"{pair} is not in feed.pairs; add it there or remove it"
            )
    for pair in pairs:
        fetch.sources[pair] = _pair_sources(r, pair, aggregation)
    return fetch


def _pair_sources(r: Reader, pair: str, aggregation: AggregationConfig) -> tuple[str, ...]:
    key = f"feed.sources.{pair}"
    faults = len(r.errors)
    names = r.items(key, string)
    if names is None:
        good = default_sources(pair)
        if not good:
            r.fail("feed.pairs", f"no known source lists {pair}; remove it")
        elif aggregation.strategy == "median" and len(good) < aggregation.quorum:
            r.fail(
                "aggregation.quorum",
                f"{aggregation.quorum} is more than the {len(good)} source(s) that list {pair}; "
                f'lower it or use strategy "failover"',
            )
        return good
    chosen: list[str] = []
    for i, name in enumerate(names):
        item = f"{key}[{i}]"
        if name not in SOURCES:
            r.fail(item, f"{name!r} is not a known source ({', '.join(SOURCES)})")
        elif name in chosen:
            r.fail(item, f"{name} is listed twice; remove one")
        elif not SOURCES[name]().supports(pair):
            only = ", ".join(f"-{q}" for q in sorted(SOURCES[name].quote_currencies or ()))
            r.fail(item, f"{name} does not list {pair} (it lists only {only} pairs)")
        else:
            chosen.append(name)
    if len(r.errors) > faults:
        return tuple(chosen)
    if not names:
        r.fail(key, "must name at least one source (remove the key to use every source)")
    elif aggregation.strategy == "median" and len(chosen) < aggregation.quorum:
        r.fail(
            key,
            f"{len(chosen)} source(s) but aggregation.quorum is {aggregation.quorum}, so no price "
            "could ever be published; add sources or lower the quorum",
        )
    return tuple(chosen)


def _build_exchanges(r: Reader) -> dict[str, ExchangeConfig]:
    exchanges: dict[str, ExchangeConfig] = {}
    for name in r.table("exchanges"):
        key = f"exchanges.{name}"
        if name not in SOURCES:
            r.fail(key, f"{name!r} is not a known source ({', '.join(SOURCES)})")
            continue
        exchange = ExchangeConfig(base_url=r.get(f"{key}.base_url", None, url))
        if name == "simulated":
            exchange = replace(
                exchange,
                seed=r.get(f"{key}.seed", 0, integer(0, 2**63 - 1)),
                volatility=r.get(f"{key}.volatility", 0.0005, number(0, 0.5)),
            )
        else:
            for knob in ("seed", "volatility"):
                if knob in r.table(key):
                    r.fail(f"{key}.{knob}", "only the simulated source takes this; remove it")
        exchanges[name] = exchange
    return exchanges


def _db_path(value: Any) -> Path:
    text = string(value)
    if not text.strip():
        raise Bad("must not be empty (leave the key out for the default)")
    if "\0" in text:
        raise Bad("contains a NUL character, which no file name can hold")
    try:
        path = Path(text).expanduser()
        is_dir = path.is_dir()
    except RuntimeError:
        raise Bad(f"{text!r}: no home directory to expand ~ to; write the full path") from None
    except OSError as exc:
        raise Bad(f"{text!r} cannot be used: {exc.strerror or exc}") from None
    if is_dir:
        raise Bad(f"{text!r} is a directory; name the file, like {path / DB_FILENAME}")
    return path
