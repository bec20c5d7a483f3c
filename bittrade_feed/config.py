"""The TOML config file, read into frozen dataclasses; every fault names its key.

Every key is optional; ``config.example.toml`` lists them all with their defaults.
``load_config`` collects *all* faults before raising one ``ConfigError``, so an operator
fixes a file in one pass instead of one key per restart.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from bittrade_feed.errors import ConfigError
from bittrade_feed.models import split_pair
from bittrade_feed.sources import REAL_SOURCES, SOURCES

DB_FILENAME = "bittrade-feed.sqlite3"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
STRATEGIES = ("median", "failover")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the HTTP API listens."""

    host: str = "127.0.0.1"
    port: int = 8080
    metrics_host: str = ""
    """Serve /metrics on its own address too (empty: only on the main listener)."""
    metrics_port: int = 0
    shutdown_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where prices are kept and for how long."""

    path: Path = field(default_factory=lambda: default_db_path())  # noqa: PLW0108 - defined below
    retention_days: float = 0.0
    """Delete prices older than this many days (0: keep every price)."""


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """What to fetch and how often."""

    pairs: tuple[str, ...] = ("BTC-USD",)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per pair, the enabled sources in priority order."""
    interval: float = 30.0
    request_timeout: float = 5.0
    max_attempts: int = 3
    stale_after: float = 90.0


@dataclass(frozen=True, slots=True)
class AggregationConfig:
    """How several quotes become one price."""

    strategy: str = "median"
    quorum: int = 2
    max_deviation: Decimal = Decimal("0.01")


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


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log verbosity and rendering."""

    level: str = "info"
    format: str = "auto"


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


def default_sources(pair: str) -> tuple[str, ...]:
    """Every real exchange that lists the pair; never the simulator."""
    return tuple(name for name in REAL_SOURCES if SOURCES[name]().supports(pair))


def load_config(path: Path | None) -> Config:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return parse_config({})
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([(str(path), "file not found")]) from None
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a decoded TOML document into a ``Config``."""
    reader = _Reader(raw)
    config = _build(reader)
    reader.finish()
    return config


T = TypeVar("T")


class _Reader:
    """Takes keys out of the document, noting every fault with its full key path."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.errors: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    def finish(self) -> None:
        for key in _leaf_keys(self.raw):
            if not any(key == s or key.startswith(s + ".") for s in self._seen):
                self.errors.append((key, "unknown key"))
        if self.errors:
            raise ConfigError(self.errors)

    def fail(self, key: str, problem: str) -> None:
        self.errors.append((key, problem))

    def table(self, key: str) -> dict[str, Any]:
        node: Any = self.raw
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            self.fail(key, f"must be a table, not {_kind(node)}")
            self._seen.add(key)
            return {}
        return node

    def get(self, key: str, default: T, check: Callable[[Any], T]) -> T:
        table, _, name = key.rpartition(".")
        node = self.table(table) if table else self.raw
        self._seen.add(key)
        if name not in node:
            return default
        try:
            return check(node[name])
        except _Bad as bad:
            self.fail(key, str(bad))
            return default

    @contextmanager
    def claim(self, key: str) -> Iterator[dict[str, Any]]:
        """Hand a whole sub-table to the caller, who reports its own keys."""
        self._seen.add(key)
        yield self.table(key)


class _Bad(ValueError):
    pass


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _number(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"must be a number, not {_kind(value)}")
        if not math.isfinite(value) or value < lo or (lo_open and value == lo) or value > hi:
            low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
            high = "" if hi == math.inf else f" and at most {hi:g}"
            raise _Bad(f"{value!r} is out of range: must be {low}{high}")
        return float(value)

    return check


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be an integer, not {_kind(value)}")
        if not lo <= value <= hi:
            raise _Bad(f"{value} is out of range: must be from {lo} to {hi}")
        return value

    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad(f"must be a string, not {_kind(value)}")
        if value not in options:
            raise _Bad(f"{value!r} is not one of {', '.join(options)}")
        return value

    return check


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, not {_kind(value)}")
    return value


def _url(value: Any) -> str:
    text = _string(value)
    if not text.startswith(("http://", "https://")):
        raise _Bad(f"{text!r} must start with http:// or https://")
    return text


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f"must be a list of strings, not {_kind(value)}")
    return tuple(value)


def _build(r: _Reader) -> Config:
    server = ServerConfig(
        host=r.get("server.host", "127.0.0.1", _string),
        port=r.get("server.port", 8080, _integer(0, 65535)),
        metrics_host=r.get("server.metrics_host", "", _string),
        metrics_port=r.get("server.metrics_port", 0, _integer(0, 65535)),
        shutdown_timeout=r.get("server.shutdown_timeout", 10.0, _number(0.1, 300)),
    )
    if server.metrics_host and not server.metrics_port:
        r.fail("server.metrics_port", "must be set when server.metrics_host is")
    db_path = r.get("database.path", "", _string)
    database = DatabaseConfig(
        path=Path(db_path) if db_path else default_db_path(),
        retention_days=r.get("database.retention_days", 0.0, _number(0)),
    )
    fetch = _build_fetch(r)
    aggregation = AggregationConfig(
        strategy=r.get("aggregation.strategy", "median", _choice(STRATEGIES)),
        quorum=r.get("aggregation.quorum", 2, _integer(1, 50)),
        max_deviation=Decimal(
            str(r.get("aggregation.max_deviation", 0.01, _number(0, 1, lo_open=True)))
        ),
    )
    if aggregation.strategy == "median":
        for pair, names in fetch.sources.items():
            if len(names) < aggregation.quorum:
                r.fail(
                    f"feed.sources.{pair}",
                    f"{len(names)} source(s) enabled but aggregation.quorum is "
                    f"{aggregation.quorum}: no price could ever be published",
                )
    stream = StreamConfig(
        heartbeat=r.get("stream.heartbeat", 15.0, _number(1, 300)),
        retry_ms=r.get("stream.retry_ms", 3000, _integer(100, 600_000)),
        max_subscribers=r.get("stream.max_subscribers", 10_000, _integer(1, 1_000_000)),
        max_buffer_bytes=r.get("stream.max_buffer_bytes", 256 * 1024, _integer(4096, 1 << 30)),
        replay_limit=r.get("stream.replay_limit", 1000, _integer(0, 100_000)),
        max_lifetime=r.get("stream.max_lifetime", 0.0, _number(0)),
    )
    log = LogConfig(
        level=r.get("log.level", "info", _choice(LOG_LEVELS)),
        format=r.get("log.format", "auto", _choice(LOG_FORMATS)),
    )
    return Config(server, database, fetch, aggregation, _build_exchanges(r), stream, log)


def _build_fetch(r: _Reader) -> FetchConfig:
    pairs: list[str] = []
    for i, pair in enumerate(r.get("feed.pairs", ("BTC-USD",), _string_list)):
        try:
            split_pair(pair)
        except ValueError as exc:
            r.fail(f"feed.pairs[{i}]", str(exc))
            continue
        if pair in pairs:
            r.fail(f"feed.pairs[{i}]", f"{pair} is listed twice")
        pairs.append(pair)
    if not pairs and not any(k.startswith("feed.pairs") for k, _ in r.errors):
        r.fail("feed.pairs", "must list at least one pair")
    interval = r.get("feed.interval", 30.0, _number(0.05, 86400))
    sources: dict[str, tuple[str, ...]] = {}
    with r.claim("feed.sources") as table:
        for pair in table:
            if pair not in pairs:
                r.fail(f"feed.sources.{pair}", f"{pair} is not in feed.pairs")
        for pair in pairs:
            names = r.get(f"feed.sources.{pair}", default_sources(pair), _string_list)
            sources[pair] = _check_sources(r, pair, names)
    fetch = FetchConfig(
        pairs=tuple(pairs),
        sources=sources,
        interval=interval,
        request_timeout=r.get("feed.request_timeout", 5.0, _number(0.05, 120)),
        max_attempts=r.get("feed.max_attempts", 3, _integer(1, 10)),
        stale_after=r.get("feed.stale_after", max(90.0, 3 * interval), _number(0.05)),
    )
    if fetch.stale_after < fetch.interval:
        r.fail("feed.stale_after", f"{fetch.stale_after:g} is shorter than feed.interval")
    if fetch.request_timeout > fetch.interval:
        r.fail("feed.request_timeout", f"{fetch.request_timeout:g} is longer than feed.interval")
    return fetch


def _check_sources(r: _Reader, pair: str, names: tuple[str, ...]) -> tuple[str, ...]:
    good: list[str] = []
    for i, name in enumerate(names):
        key = f"feed.sources.{pair}[{i}]"
        if name not in SOURCES:
            r.fail(key, f"{name!r} is not a known source ({', '.join(SOURCES)})")
        elif name in good:
            r.fail(key, f"{name} is listed twice")
        elif not SOURCES[name]().supports(pair):
            r.fail(key, f"{name} does not list {pair}")
        else:
            good.append(name)
    if not names:
        r.fail(f"feed.sources.{pair}", "must name at least one source")
    return tuple(good)


def _build_exchanges(r: _Reader) -> dict[str, ExchangeConfig]:
    exchanges: dict[str, ExchangeConfig] = {}
    with r.claim("exchanges") as table:
        for name in table:
            if name not in SOURCES:
                r.fail(f"exchanges.{name}", f"{name!r} is not a known source")
                continue
            key = f"exchanges.{name}"
            exchanges[name] = ExchangeConfig(
                base_url=r.get(f"{key}.base_url", None, _url),
                seed=r.get(f"{key}.seed", 0, _integer(0, 2**63)),
                volatility=r.get(f"{key}.volatility", 0.0005, _number(0, 0.5)),
            )
    return exchanges


def _leaf_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaf_keys(value, path + ".")
        else:
            yield path
