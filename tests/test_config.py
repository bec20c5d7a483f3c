"""The config file: every key's validation, defaults, the shipped examples and check-config."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bittrade_feed import cli
from bittrade_feed.config import (
    DB_FILENAME,
    Config,
    _build,
    load_config,
    parse_config,
)
from bittrade_feed.config_checks import Reader
from bittrade_feed.errors import ConfigError
from bittrade_feed.sources import REAL_SOURCES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
DEMO = ROOT / "examples" / "demo.toml"
DOCS = ROOT / "README.md"


@pytest.fixture(autouse=True)
def _no_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts outside systemd, whatever the environment running the suite."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


def doc(key: str, value: Any) -> dict[str, Any]:
    """A document that sets one dotted key (``feed.sources.BTC-USD``) to ``value``."""
    *tables, name = key.split(".")
    raw: dict[str, Any] = {name: value}
    for table in reversed(tables):
        raw = {table: raw}
    return raw


def faults(raw: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (key, problem) pairs ``parse_config`` reports for ``raw``; fails if it accepts it."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.details


def write(tmp_path: Path, text: str | bytes, name: str = "config.toml") -> Path:
    """Write a config file into the test's directory."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# key, bad value, words the message must contain.
def short(value: Any) -> str:
    """A test id for a value: huge integers and long strings by their size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<{value.bit_length()}-bit int>"
    text = repr(value)
    return text if len(text) <= 40 else f"<{len(text)} chars>"


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("server.host", 1, "must be a string, not an integer"),
    ("server.host", "", "must not be empty"),
    ("server.host", "0.0.0.0:8080", "looks like host:port"),
    ("server.host", "http://localhost", "not a host name or address"),
    ("server.host", "[::1]", "without brackets"),
    ("database.timeout", 0, "0 is out of range: must be at least 0.05 and at most 300"),
    ("database.timeout", 301, "301 is out of range: must be at least 0.05 and at most 300"),
    ("database.timeout", "5", "must be a number, not a string"),
    ("server.port", "8080", "must be an integer, not a string"),
    ("server.port", True, "must be an integer, not a boolean"),
    ("server.port", 8080.0, "without a decimal point"),
    ("server.port", 0, "0 is out of range: must be from 1 to 65535"),
    ("server.port", 65536, "65536 is out of range: must be from 1 to 65535"),
    ("server.metrics_host", 9100, "must be a string, not an integer"),
    ("server.metrics_host", " ", "must not be empty"),
    ("server.metrics_port", "9100", "must be an integer, not a string"),
    ("server.metrics_port", -1, "-1 is out of range: must be from 0 to 65535"),
    ("server.shutdown_timeout", "10", "must be a number, not a string"),
    ("server.shutdown_timeout", 0, "0 is out of range: must be at least 0.1 and at most 300"),
    ("server.shutdown_timeout", 301, "out of range"),
    ("server.shutdown_timeout", 10**400, "a number of about 401 digits is out of range"),
    ("server.port", 10**4999, "a number of about 5000 digits is out of range"),
    ("server.backlog", "4096", "must be an integer, not a string"),
    ("server.backlog", 0, "0 is out of range: must be from 1 to 65535"),
    ("server.backlog", 65536, "65536 is out of range: must be from 1 to 65535"),
    ("database.path", 1, "must be a string, not an integer"),
    ("database.path", "", "must not be empty"),
    ("database.path", "data/feed\0.sqlite3", "contains a NUL character"),
    ("database.path", "~nouser-bittrade/x.sqlite3", "no home directory to expand ~ to"),
    ("database.path", "d" * 5000, "cannot be used: File name too long"),
    ("database.retention_days", "7", "must be a number, not a string"),
    ("database.retention_days", -1, "-1 is out of range: must be at least 0"),
    ("feed.pairs", "BTC-USD", 'must be a list, not a string (write ["BTC-USD"])'),
    ("feed.pairs", [], "must list at least one pair"),
    ("feed.interval", "30", "must be a number, not a string"),
    ("feed.interval", True, "must be a number, not a boolean"),
    ("feed.interval", 0.005, "0.005 is out of range: must be at least 0.01 and at most 86400"),
    ("feed.interval", 86401, "out of range"),
    ("feed.interval", float("inf"), "out of range"),
    ("feed.interval", float("nan"), "out of range"),
    ("feed.request_timeout", [5], "must be a number, not a list"),
    ("feed.request_timeout", 0, "out of range: must be at least 0.01 and at most 120"),
    ("feed.max_attempts", 2.5, "must be an integer, not a number"),
    ("feed.max_attempts", 0, "0 is out of range: must be from 1 to 10"),
    ("feed.max_attempts", 11, "11 is out of range: must be from 1 to 10"),
    ("feed.stale_after", "90s", "must be a number, not a string"),
    ("feed.stale_after", -5, "-5 is out of range: must be at least 0.01"),
    ("feed.sources.BTC-USD", "kraken", 'must be a list, not a string (write ["kraken"])'),
    ("feed.sources.BTC-USD", [], "must name at least one source"),
    ("feed.sources", ["kraken"], "must be a table, not a list"),
    ("aggregation.strategy", 1, "must be a string, not an integer"),
    ("aggregation.strategy", "mean", "'mean' is not one of median, failover"),
    ("aggregation.quorum", 2.0, "must be an integer, not a number"),
    ("aggregation.quorum", 0, "0 is out of range: must be from 1 to 50"),
    ("aggregation.quorum", 51, "51 is out of range: must be from 1 to 50"),
    ("aggregation.max_deviation", "1%", "must be a number, not a string"),
    ("aggregation.max_deviation", 0, "must be greater than 0 and at most 1"),
    ("aggregation.max_deviation", 1.5, "must be greater than 0 and at most 1"),
    ("aggregation.jump_guard", "15%", "must be a number, not a string"),
    ("aggregation.jump_guard", -0.1, "must be at least 0 and at most 10"),
    ("aggregation.jump_guard", 11, "must be at least 0 and at most 10"),
    ("aggregation.jump_guard", float("nan"), "out of range"),
    ("aggregation.jump_confirmations", 0, "0 is out of range: must be from 1 to 100"),
    ("aggregation.jump_confirmations", 101, "101 is out of range: must be from 1 to 100"),
    ("aggregation.jump_confirmations", 2.0, "without a decimal point"),
    ("aggregation.jump_confirmations", True, "must be an integer, not a boolean"),
    ("stream.heartbeat", "15", "must be a number, not a string"),
    ("stream.heartbeat", 0.5, "0.5 is out of range: must be at least 1 and at most 300"),
    ("stream.retry_ms", 3000.5, "must be an integer, not a number"),
    ("stream.retry_ms", 99, "99 is out of range: must be from 100 to 600000"),
    ("stream.max_subscribers", "many", "must be an integer, not a string"),
    ("stream.max_subscribers", 0, "0 is out of range: must be from 1 to 1000000"),
    ("stream.max_buffer_bytes", "256k", "must be an integer, not a string"),
    ("stream.max_buffer_bytes", 4095, "4095 is out of range: must be from 4096 to 1073741824"),
    ("stream.replay_limit", False, "must be an integer, not a boolean"),
    ("stream.replay_limit", -1, "-1 is out of range: must be from 0 to 100000"),
    ("stream.max_lifetime", "1h", "must be a number, not a string"),
    ("stream.max_lifetime", -1, "-1 is out of range: must be at least 0"),
    ("stream.coalesce_ms", 2.5, "must be an integer, not a number"),
    ("stream.coalesce_ms", 5000, "5000 is out of range: must be from 0 to 1000"),
    ("stream.ws_ops_burst", 0, "0 is out of range: must be from 1 to 10000"),
    ("stream.ws_ops_burst", 2.5, "must be an integer, not a number"),
    ("stream.ws_ops_per_second", "2/s", "must be a number, not a string"),
    ("stream.ws_ops_per_second", 0, "0 is out of range: must be at least 0.01"),
    ("stream.ws_ops_per_second", -(10**400), "a number of about 401 digits is out of range"),
    ("log.level", 20, "must be a string, not an integer"),
    ("log.level", "INFO", "'INFO' is not one of debug, info, warning, error"),
    ("log.format", True, "must be a string, not a boolean"),
    ("log.format", "xml", "'xml' is not one of auto, json, console"),
    ("exchanges.kraken.base_url", 1, "must be a string, not an integer"),
    ("exchanges.kraken.base_url", "api.kraken.com", "is not an http:// or https:// URL"),
    ("exchanges.kraken.base_url", "ftp://api.kraken.com", "is not an http:// or https:// URL"),
    ("exchanges.kraken.base_url", "http://[::1", "'http://[::1' is not a valid URL"),
    ("exchanges.kraken.base_url", "http://h:99999/", "is not a valid URL: Port out of range"),
    ("exchanges.kraken.base_url", "http://u:pw@[::1", "'http://***@[::1' is not a valid URL"),
    ("exchanges.simulated.seed", "42", "must be an integer, not a string"),
    ("exchanges.simulated.seed", -1, "-1 is out of range: must be from 0 to"),
    ("exchanges.simulated.volatility", "low", "must be a number, not a string"),
    ("exchanges.simulated.volatility", 0.6, "0.6 is out of range: must be at least 0"),
    # [cluster] and server.reuse_port (issue 12)
    ("server.reuse_port", 1, "must be true or false, not an integer"),
    ("server.reuse_port", "yes", "must be true or false, not a string"),
    ("cluster.redis_url", 6379, "must be a string, not an integer"),
    ("cluster.redis_url", "http://127.0.0.1:6379", "is not a redis://, rediss:// or unix:// URL"),
    ("cluster.redis_url", "127.0.0.1:6379", "is not a redis://, rediss:// or unix:// URL"),
    ("cluster.redis_url", "redis://", "names no host"),
    ("cluster.redis_url", "redis://127.0.0.1:port/0", "port that is not a number"),
    ("cluster.redis_url", "unix://", "names no socket path"),
    ("cluster.sentinels", "127.0.0.1:26379", "must be a list, not a string"),
    ("cluster.master_name", 1, "must be a string, not an integer"),
    ("cluster.master_name", "mymaster", "is only used with cluster.sentinels"),
    ("cluster.node_name", 7, "must be a string, not an integer"),
    ("cluster.node_name", "node one", "must be letters, digits"),
    ("cluster.lease_ms", 5.5, "must be an integer, not a number"),
    ("cluster.lease_ms", 100, "100 is out of range: must be from 500 to 600000"),
    ("cluster.feed_key", "", "must be 1 to 64 letters"),
    ("cluster.feed_key", "b{t}", "must be 1 to 64 letters"),
    ("cluster.stream_maxlen", 10, "10 is out of range: must be from 100 to 100000000"),
    ("auth.enabled", "yes", "must be true or false, not a string"),
    ("auth.key_file", 1, "must be a string, not an integer"),
    ("auth.key_file", "/nonexistent/keys.toml", "key file not found"),
    ("auth.session_secret_file", "/nonexistent/secret", "cannot be read"),
    ("auth.session_ttl", 10, "10 is out of range: must be at least 60"),
    ("auth.leeway", -1, "-1 is out of range: must be at least 0"),
    ("auth.cookie_secure", "sometimes", "'sometimes' is not one of auto, true, false"),
    ("auth.public", "/api/price", "must be a list, not a string"),
    ("auth.jwt", {"issuer": "x"}, "must be a list, not a table"),
    ("alerts.enabled", "yes", "must be true or false"),
    ("alerts.max_rules_per_owner", 0, "0 is out of range: must be from 1 to 100000"),
    ("alerts.checkpoint_seconds", 0, "out of range"),
    ("alerts.max_endpoints_per_owner", 0, "0 is out of range: must be from 1 to 1000"),
    ("alerts.rotation_overlap", -1, "out of range"),
    ("alerts.webhook_allow_http", "yes", "must be true or false"),
    ("alerts.webhook_allow", "127.0.0.1", "must be a list, not a string"),
    ("alerts.webhook_timeout", 0, "out of range"),
    ("alerts.max_attempts", 0, "0 is out of range: must be from 1 to 100"),
    ("alerts.retry_base", 0, "out of range"),
    ("alerts.retry_cap", 0, "out of range"),
    # limits, proxies, CORS and TLS (issue 13)
    ("stream.max_per_address", -1, "-1 is out of range: must be from 0 to 1000000"),
    ("stream.max_per_address", "20", "must be an integer, not a string"),
    ("stream.max_per_credential", 2.5, "must be an integer, not a number"),
    ("stream.connect_burst", -1, "-1 is out of range: must be from 0 to 1000000"),
    ("stream.connect_per_second", 0, "0 is out of range: must be at least 0.01"),
    ("server.trusted_proxies", "10.0.0.1", "must be a list, not a string"),
    ("server.proxy_header", "x-real-ip", "'x-real-ip' is not one of x-forwarded-for, forwarded"),
    ("server.cors_origins", "https://a.example", "must be a list, not a string"),
    ("server.tls_cert", 1, "must be a string, not an integer"),
    ("server.tls_key", False, "must be a string, not a boolean"),
]


@pytest.mark.parametrize(
    ("key", "value", "problem"), BAD_VALUES, ids=[f"{k}={short(v)}" for k, v, _ in BAD_VALUES]
)
def test_bad_value_is_reported_once_at_its_key(key: str, value: Any, problem: str) -> None:
    """A wrong type or an out-of-range value is one fault, at its own key, naming the problem."""
    [(where, message)] = faults(doc(key, value))
    assert where == key
    assert problem in message


@pytest.mark.parametrize(
    ("pairs", "key", "problem"),
    [
        (
            ["BTC-USD", "BTCUSD"],
            "feed.pairs[1]",
            "'BTCUSD' is not BASE-QUOTE (for example BTC-USD)",
        ),
        (["btc-usd"], "feed.pairs[0]", "'btc-usd' must be upper case: BTC-USD"),
        (["BTC-USD", 3], "feed.pairs[1]", "must be a string, not an integer"),
        (["BTC-USD", "BTC-USD"], "feed.pairs[1]", "BTC-USD is listed twice; remove one"),
    ],
)
def test_bad_pair_names_its_index(pairs: list[Any], key: str, problem: str) -> None:
    """A bad entry of feed.pairs is reported with its index."""
    assert faults(doc("feed.pairs", pairs)) == ((key, problem),)


def test_database_path_that_is_a_directory(tmp_path: Path) -> None:
    """A directory given as the database path says to name the file inside it."""
    [(key, problem)] = faults(doc("database.path", str(tmp_path)))
    assert key == "database.path"
    assert "is a directory" in problem
    assert str(tmp_path / DB_FILENAME) in problem


def test_database_path_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``~`` in the database path is the service user's home, not a directory named ``~``."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config(doc("database.path", "~/feed.sqlite3"))
    assert config.database.path == tmp_path / "feed.sqlite3"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::1", "localhost", "feed.example.org"])
def test_good_listen_hosts(host: str) -> None:
    """Addresses and names, IPv4 and IPv6, are accepted as the listen host."""
    assert parse_config(doc("server.host", host)).server.host == host


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"server": {"prot": 8080}}, "server.prot"),
        ({"feed": {"pair": ["BTC-USD"]}}, "feed.pair"),
        ({"stream": {"heartbeat_s": 15}}, "stream.heartbeat_s"),
        ({"log": {"levle": "info"}}, "log.levle"),
        ({"aggregation": {"quorom": 2}}, "aggregation.quorom"),
        ({"database": {"file": "x.db"}}, "database.file"),
        ({"verbose": True}, "verbose"),
        ({"fetch": {"interval": 30}}, "fetch"),
        ({"server": {"tls": {"cert": "x.pem"}}}, "server.tls"),
        ({"exchanges": {"kraken": {"base_uri": "https://x"}}}, "exchanges.kraken.base_uri"),
    ],
)
def test_unknown_key_at_every_level(section: dict[str, Any], key: str) -> None:
    """An unknown key is one fault at its own path (a whole unknown table once, not per leaf)."""
    [(where, problem)] = faults(section)
    assert where == key
    assert problem.startswith("unknown key (")


def test_unknown_key_suggests_the_near_miss() -> None:
    """A typo gets the key it was probably meant to be."""
    assert faults({"server": {"prot": 8080}}) == (
        ("server.prot", "unknown key (did you mean server.port?)"),
    )


def test_unknown_section_lists_the_known_ones() -> None:
    """A section nothing resembles gets the list of sections there are."""
    [(_, problem)] = faults({"tls": {}})
    assert problem == (
        "unknown key (expected one of: aggregation, alerts, auth, cluster, database, exchanges, "
        "feed, log, server, stream)"
    )


@pytest.mark.parametrize(
    "key",
    ["server", "database", "feed", "aggregation", "stream", "log", "exchanges", "feed.sources"],
)
def test_section_that_is_not_a_table_is_one_fault(key: str) -> None:
    """``feed = 3`` is reported once, at ``feed``, with no echo as an unknown key."""
    assert faults(doc(key, 3)) == ((key, "must be a table, not an integer"),)


def test_exchange_that_is_not_a_table_is_one_fault() -> None:
    """``exchanges.kraken = 3`` is reported once, at its key."""
    assert faults({"exchanges": {"kraken": 3}}) == (
        ("exchanges.kraken", "must be a table, not an integer"),
    )


def test_unknown_exchange() -> None:
    """An exchanges table for a source that does not exist names the known ones."""
    [(key, problem)] = faults({"exchanges": {"krakken": {"base_url": "https://x"}}})
    assert key == "exchanges.krakken"
    assert problem.startswith("'krakken' is not a known source (coinbase, ")


@pytest.mark.parametrize("knob", ["seed", "volatility"])
def test_simulator_knobs_on_a_real_exchange(knob: str) -> None:
    """seed and volatility on a real exchange say they belong to the simulator."""
    assert faults({"exchanges": {"kraken": {knob: 1}}}) == (
        (f"exchanges.kraken.{knob}", "only the simulated source takes this; remove it"),
    )


def test_exchange_overrides_are_read() -> None:
    """base_url, seed and volatility reach the config; other exchanges keep their defaults."""
    config = parse_config(
        {
            "exchanges": {
                "kraken": {"base_url": "http://127.0.0.1:9000/kraken"},
                "simulated": {"seed": 7, "volatility": 0},
            }
        }
    )
    assert config.exchange("kraken").base_url == "http://127.0.0.1:9000/kraken"
    assert config.exchange("simulated").seed == 7
    assert config.exchange("simulated").volatility == 0.0
    assert config.exchange("gemini").base_url is None


def test_many_faults_are_reported_together(tmp_path: Path) -> None:
    """One load reports every fault, each with its key, so a file is fixed in one pass."""
    path = write(
        tmp_path,
        '[server]\nport = "80"\nhots = "x"\n[feed]\npairs = ["BTC-USD", "BTCUSD"]\n'
        '[log]\nlevel = "loud"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = [key for key, _ in info.value.details]
    assert sorted(keys) == ["feed.pairs[1]", "log.level", "server.hots", "server.port"]
    assert all(key in str(info.value) for key in keys)


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    """A syntax error says it is not TOML and on which line."""
    path = write(tmp_path, '[server]\nport = 8080\nhost = "127.0.0.1\n')
    [(key, problem)] = load_config_faults(path)
    assert key == str(path)
    assert problem.startswith("not valid TOML: ")
    assert "line 3" in problem


def test_file_not_utf8(tmp_path: Path) -> None:
    """A file in another encoding is a config fault, not a traceback."""
    path = write(tmp_path, b'[log]\nlevel = "info" # \xe9t\xe9\n')
    assert load_config_faults(path) == ((str(path), "not valid TOML: the file is not UTF-8 text"),)


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is named."""
    path = tmp_path / "nope.toml"
    assert load_config_faults(path) == ((str(path), "file not found"),)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config file says it cannot be read."""
    [(key, problem)] = load_config_faults(tmp_path)
    assert key == str(tmp_path)
    assert problem.startswith("cannot read: ")


def load_config_faults(path: Path) -> tuple[tuple[str, str], ...]:
    """The faults ``load_config`` reports for ``path``."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.details


def test_defaults_without_a_file() -> None:
    """No file: listen on loopback, BTC-USD every 30 s from every real exchange, db in ./data."""
    config = load_config(None)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.database.path == Path("data") / DB_FILENAME
    assert config.fetch.pairs == ("BTC-USD",)
    assert config.fetch.interval == 30.0
    assert config.fetch.request_timeout == 5.0
    assert config.fetch.stale_after == 90.0
    assert config.aggregation.strategy == "median"
    assert config.aggregation.quorum == 2
    assert config.aggregation.max_deviation == Decimal("0.01")
    assert config.aggregation.jump_guard == Decimal("0.15")
    assert config.aggregation.jump_confirmations == 2
    assert config.log.level == "info"
    assert config == parse_config({})


def test_default_db_under_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd (StateDirectory=) the database goes to the first state directory."""
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/bittrade-feed:/var/lib/other")
    assert load_config(None).database.path == Path("/var/lib/bittrade-feed") / DB_FILENAME


def test_default_sources_are_real_exchanges_that_list_the_pair() -> None:
    """A pair without feed.sources gets every real exchange listing it, never the simulator."""
    config = parse_config({"feed": {"pairs": ["BTC-USD", "BTC-USDT"]}})
    usd = config.sources_for("BTC-USD")
    assert "simulated" not in usd
    assert "kraken" in usd
    assert "okx" not in usd
    assert "binance" not in usd
    assert set(usd) <= set(REAL_SOURCES)
    assert {"okx", "binance"} <= set(config.sources_for("BTC-USDT"))


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    """``interval = 10`` is as good as ``interval = 10.0``, and is kept as a float."""
    config = parse_config({"feed": {"interval": 10, "stale_after": 60}})
    assert config.fetch.interval == 10.0
    assert isinstance(config.fetch.interval, float)
    assert isinstance(config.fetch.stale_after, float)


def test_max_deviation_is_an_exact_decimal() -> None:
    """A TOML float becomes the Decimal the operator wrote, not its binary approximation."""
    assert parse_config(doc("aggregation.max_deviation", 0.005)).aggregation.max_deviation == (
        Decimal("0.005")
    )


def test_jump_guard_is_an_exact_decimal_and_zero_turns_it_off() -> None:
    """``jump_guard = 0.1`` is Decimal 0.1 exactly; ``0`` is accepted (the guard is off)."""
    assert parse_config(doc("aggregation.jump_guard", 0.1)).aggregation.jump_guard == (
        Decimal("0.1")
    )
    assert parse_config(doc("aggregation.jump_guard", 0)).aggregation.jump_guard == 0


def test_timing_defaults_follow_a_short_or_long_interval() -> None:
    """``interval = 2`` alone is valid (timeout 2 s); ``interval = 60`` goes stale after 180 s."""
    short = parse_config(doc("feed.interval", 2))
    assert short.fetch.request_timeout == 2.0
    assert short.fetch.stale_after == 90.0
    assert parse_config(doc("feed.interval", 60)).fetch.stale_after == 180.0


def test_stale_after_shorter_than_interval() -> None:
    """A feed that would go stale between two fetches is refused at stale_after."""
    assert faults({"feed": {"interval": 60, "stale_after": 30}}) == (
        (
            "feed.stale_after",
            "30 s is shorter than feed.interval (60 s); make it at least two or three intervals",
        ),
    )


def test_request_timeout_longer_than_interval() -> None:
    """A request that may outlast the interval is refused at request_timeout."""
    assert faults({"feed": {"interval": 2, "request_timeout": 5}}) == (
        (
            "feed.request_timeout",
            "5 s is longer than feed.interval (2 s); lower it or raise feed.interval",
        ),
    )


def test_unknown_source() -> None:
    """A source name that does not exist is named with its index, and the known ones listed."""
    [(key, problem)] = faults(doc("feed.sources.BTC-USD", ["kraken", "krakn", "gemini"]))
    assert key == "feed.sources.BTC-USD[1]"
    assert problem.startswith("'krakn' is not a known source (coinbase, coinbase_exchange, kraken")


def test_source_that_is_not_a_string() -> None:
    """A number in a source list is a type fault at its index."""
    assert faults(doc("feed.sources.BTC-USD", ["kraken", 1])) == (
        ("feed.sources.BTC-USD[1]", "must be a string, not an integer"),
    )


def test_duplicate_source() -> None:
    """A source listed twice for one pair is refused at the second mention."""
    assert faults(doc("feed.sources.BTC-USD", ["kraken", "gemini", "kraken"])) == (
        ("feed.sources.BTC-USD[2]", "kraken is listed twice; remove one"),
    )


def test_source_that_does_not_list_the_pair() -> None:
    """OKX serves only -USDT pairs, so okx for BTC-USD is refused and says why."""
    assert faults(doc("feed.sources.BTC-USD", ["kraken", "gemini", "okx"])) == (
        ("feed.sources.BTC-USD[2]", "okx does not list BTC-USD (it lists only -USDT pairs)"),
    )


def test_usdt_sources_for_a_usdt_pair() -> None:
    """okx and binance are accepted for a -USDT pair."""
    config = parse_config(
        {"feed": {"pairs": ["BTC-USDT"], "sources": {"BTC-USDT": ["binance", "okx"]}}}
    )
    assert config.sources_for("BTC-USDT") == ("binance", "okx")


def test_sources_for_a_pair_not_fetched() -> None:
    """feed.sources for a pair missing from feed.pairs says to add it there."""
    assert faults(doc("feed.sources.ETH-USD", ["kraken", "gemini"])) == (
        ("feed.sources.ETH-USD", "ETH-USD is not in feed.pairs; add it there or remove it"),
    )


def test_fewer_sources_than_quorum_with_median() -> None:
    """With the median strategy a pair needs at least quorum sources, or it never publishes."""
    [(key, problem)] = faults(doc("feed.sources.BTC-USD", ["kraken"]))
    assert key == "feed.sources.BTC-USD"
    assert problem.startswith("1 source(s) but aggregation.quorum is 2, so no price")


def test_quorum_above_the_default_sources() -> None:
    """A quorum more than every exchange listing the pair is refused at aggregation.quorum."""
    [(key, problem)] = faults(doc("aggregation.quorum", 20))
    assert key == "aggregation.quorum"
    assert re.fullmatch(r"20 is more than the \d+ source\(s\) that list BTC-USD; .*", problem)


def test_source_faults_do_not_cascade_into_quorum() -> None:
    """A misspelt source is one fault, not also a quorum fault for the shortened list."""
    assert [k for k, _ in faults(doc("feed.sources.BTC-USD", ["kraken", "krakn"]))] == [
        "feed.sources.BTC-USD[1]"
    ]


def test_failover_ignores_quorum() -> None:
    """A single failover source is fine whatever the quorum says."""
    config = parse_config(
        {
            "feed": {"sources": {"BTC-USD": ["kraken"]}},
            "aggregation": {"strategy": "failover", "quorum": 3},
        }
    )
    assert config.sources_for("BTC-USD") == ("kraken",)


def test_source_priority_order_is_kept() -> None:
    """The order of feed.sources is the failover priority, so it is kept as written."""
    order = ["gemini", "kraken", "coinbase"]
    assert parse_config(doc("feed.sources.BTC-USD", order)).sources_for("BTC-USD") == tuple(order)


def test_metrics_host_without_port() -> None:
    """A metrics address with no port says the port is missing."""
    assert faults(doc("server.metrics_host", "0.0.0.0")) == (
        ("server.metrics_port", "must be set when server.metrics_host is (1 to 65535)"),
    )


def test_metrics_port_without_host() -> None:
    """A metrics port with no address says the address is missing."""
    assert faults(doc("server.metrics_port", 9100)) == (
        ("server.metrics_host", "must be set when server.metrics_port is (for example 127.0.0.1)"),
    )


def test_metrics_port_clashing_with_main_port() -> None:
    """The metrics listener cannot take the main listener's port on the same address."""
    [(key, problem)] = faults({"server": {"metrics_host": "127.0.0.1", "metrics_port": 8080}})
    assert key == "server.metrics_port"
    assert "8080 is already server.port" in problem


def test_metrics_listener_accepted() -> None:
    """A separate metrics address and port are kept."""
    config = parse_config({"server": {"metrics_host": "0.0.0.0", "metrics_port": 9100}})
    assert (config.server.metrics_host, config.server.metrics_port) == ("0.0.0.0", 9100)


def example_keys(text: str) -> set[str]:
    """Dotted keys set (not commented out) in a TOML text, tables excluded."""

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        keys: set[str] = set()
        for name, value in node.items():
            if isinstance(value, dict):
                keys |= walk(value, f"{prefix}{name}.")
            else:
                keys.add(prefix + name)
        return keys

    return walk(tomllib.loads(text), "")


def schema_keys() -> set[str]:
    """Every key the loader reads, with ``<source>`` for the per-exchange keys."""
    reader = Reader({"exchanges": {"kraken": {}, "simulated": {}}})
    _build(reader)
    keys = {k for k in reader._seen if not k.startswith("feed.sources.")}
    keys.discard("exchanges.simulated.base_url")
    return {k.replace("exchanges.kraken.", "exchanges.<source>.") for k in keys}


def test_example_loads_to_the_defaults() -> None:
    """config.example.toml gives exactly the Config of no file at all."""
    assert load_config(EXAMPLE) == load_config(None)


def test_example_loads_to_the_defaults_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example leaves database.path to the default, so $STATE_DIRECTORY still applies."""
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/bittrade-feed")
    assert load_config(EXAMPLE) == load_config(None)


def test_example_shows_every_key_with_a_comment() -> None:
    """Every key is in the example (machine-dependent ones commented out), each under a comment."""
    text = EXAMPLE.read_text()
    top_level = {k for k in schema_keys() if not k.startswith("exchanges.")}
    assert example_keys(text) | {"database.path", "server.backlog"} == top_level
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"#? ?[a-z_]+ = ", line) and not line.startswith("# ["):
            above = lines[i - 1]
            assert above.startswith("#"), f"no comment above {line!r}"


def test_example_commented_tables_are_valid() -> None:
    """Uncommenting the example's per-pair sources and exchange tables gives a valid file."""
    text = re.sub(r"(?m)^# (\[|\"[A-Z]|[a-z_]+ = )", r"\1", EXAMPLE.read_text())
    text = text.replace('pairs = ["BTC-USD"]', 'pairs = ["BTC-USD", "BTC-USDT"]')
    config = parse_config(tomllib.loads(text))
    assert config.sources_for("BTC-USDT") == ("binance", "okx", "kraken")
    assert config.exchange("kraken").base_url == "https://api.kraken.com"
    assert "simulated" in config.exchanges


@pytest.mark.parametrize(
    ("cluster", "key", "problem"),
    [
        ({"sentinels": ["127.0.0.1:26379"]}, "cluster.master_name", "must be set when"),
        ({"sentinels": ["127.0.0.1"], "master_name": "m"}, "cluster.sentinels[0]", "host:port"),
        ({"sentinels": ["127.0.0.1:0"], "master_name": "m"}, "cluster.sentinels[0]", "host:port"),
        ({"sentinels": ["a b:1"], "master_name": "m"}, "cluster.sentinels[0]", "not a host"),
    ],
)
def test_cluster_cross_checks(cluster: dict[str, Any], key: str, problem: str) -> None:
    """Sentinel needs a master name and host:port addresses; each fault names its key."""
    [(where, message)] = faults({"cluster": cluster})
    assert where == key
    assert problem in message


def test_cluster_absent_is_single_node() -> None:
    """No [cluster] table (or an empty redis_url) is a single daemon, as before issue 12."""
    assert not load_config(None).cluster.enabled
    good = parse_config({"cluster": {"redis_url": "unix:///run/redis.sock", "node_name": "a-1"}})
    assert good.cluster.enabled
    sentinel = parse_config(
        {"cluster": {"sentinels": ["[::1]:26379", "10.0.0.2:26379"], "master_name": "m"}}
    )
    assert sentinel.cluster.enabled
    assert sentinel.cluster.sentinels == ("[::1]:26379", "10.0.0.2:26379")


@pytest.mark.parametrize(
    ("key", "value", "where", "problem"),
    [
        ("server.trusted_proxies", ["10.0.0.0/33"], "[0]", "is not an IP address or CIDR"),
        ("server.trusted_proxies", ["proxy.local"], "[0]", "is not an IP address or CIDR"),
        ("alerts.webhook_allow", ["localhost"], "[0]", "is not an IP address or CIDR"),
        ("server.cors_origins", ["*"], "[0]", "list each origin"),
        ("server.cors_origins", ["https://a.example/app"], "[0]", "no path"),
        ("server.cors_origins", ["a.example"], "[0]", "is not an origin like"),
        ("server.tls_cert", "/etc/ssl/cert.pem", "", "server.tls_key must be set"),
        ("server.tls_key", "/etc/ssl/key.pem", "", "server.tls_cert must be set"),
    ],
)
def test_proxy_cors_and_tls_faults(key: str, value: Any, where: str, problem: str) -> None:
    """Bad list items fault at their index; a TLS file alone faults at the missing key."""
    [(at, message)] = faults(doc(key, value))
    if where:
        assert at == key + where
    else:
        assert at != key
    assert problem in f"{at} {message}"


def test_proxy_cors_and_tls_accepted() -> None:
    """Networks are parsed (a bare address is a /32), origins lower-cased, paths kept."""
    server = parse_config(
        {
            "server": {
                "trusted_proxies": ["10.0.0.1", "fd00::/8"],
                "cors_origins": ["HTTPS://App.Example.com:8443"],
                "tls_cert": "/etc/c.pem",
                "tls_key": "/etc/k.pem",
            }
        }
    ).server
    assert [str(n) for n in server.trusted_proxies] == ["10.0.0.1/32", "fd00::/8"]
    assert server.cors_origins == ("https://app.example.com:8443",)
    assert (str(server.tls_cert), str(server.tls_key)) == ("/etc/c.pem", "/etc/k.pem")


def test_every_key_has_bad_value_cases() -> None:
    """Each key the loader reads is fed garbage in BAD_VALUES (so a new key cannot skip it)."""
    covered = {
        "exchanges.<source>.base_url" if key.endswith(".base_url") else key
        for key, _, _ in BAD_VALUES
    }
    assert schema_keys() - covered == set()


def test_docs_table_lists_every_key() -> None:
    """The README config table has one row per key the loader reads."""
    section = DOCS.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"(?m)^\| `([a-z_.<>]+)` \|", section))
    assert rows == schema_keys()


def test_demo_is_offline_and_labelled() -> None:
    """examples/demo.toml uses only the simulator, says so in capitals, and keeps its own db."""
    config = load_config(DEMO)
    assert config.fetch.pairs == ("BTC-USD", "ETH-USD")
    assert all(config.sources_for(p) == ("simulated",) for p in config.fetch.pairs)
    assert config.aggregation.quorum == 1
    assert config.fetch.interval == 2.0
    assert config.database.path == Path("data/demo.sqlite3")
    assert config.exchange("simulated").seed == 42
    first = DEMO.read_text().splitlines()[0]
    assert "SIMULATED" in first
    assert first == first.upper()


def test_config_is_frozen() -> None:
    """A loaded config cannot be changed by accident at run time."""
    config: Config = load_config(None)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


def test_check_config_accepts_a_good_file(capsys: pytest.CaptureFixture[str]) -> None:
    """check-config exits 0 and says the file is valid."""
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    assert "configuration valid" in capsys.readouterr().out


def test_check_config_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 78 and names every bad key on stderr."""
    path = write(tmp_path, '[feed]\npairs = ["BTC-USD", "BTCUSD"]\n[server]\nport = 0\n')
    assert cli.main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "feed.pairs[1]: 'BTCUSD' is not BASE-QUOTE (for example BTC-USD)" in err
    assert "server.port: 0 is out of range" in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on a path that does not exist exits 78 and names the path."""
    path = tmp_path / "absent.toml"
    assert cli.main(["check-config", str(path)]) == 78
    assert f"{path}: file not found" in capsys.readouterr().err


def test_check_config_exit_status_of_the_real_command(tmp_path: Path) -> None:
    """The console command itself exits 78 with the key on stderr, and 0 for a good file."""
    bad = write(tmp_path, '[log]\nlevel = "loud"\n')
    command = [sys.executable, "-m", "bittrade_feed.cli", "check-config"]
    result = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 78
    assert "log.level: 'loud' is not one of" in result.stderr
    good = subprocess.run([*command, str(DEMO)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr


CRASHERS = [
    ("[feed]\ninterval = 1" + "0" * 399 + "\n", "feed.interval", "a number of about 400 digits"),
    ("[feed]\ninterval = 1" + "0" * 399 + ".0\n", "feed.interval", "inf is out of range"),
    # No upper bound on stale_after: the range check alone let float() overflow.
    ("[feed]\nstale_after = 1" + "0" * 399 + "\n", "feed.stale_after", "about 400 digits"),
    ("[server]\nport = " + "9" * 5000 + "\n", "{path}", "a number has more than 4300 digits"),
    (
        '[exchanges.kraken]\nbase_url = "http://[::1"\n',
        "exchanges.kraken.base_url",
        "not a valid URL",
    ),
    ('[database]\npath = "~nouser-bittrade/x.sqlite3"\n', "database.path", "no home directory"),
    ('[database]\npath = "data/x\\u0000.sqlite3"\n', "database.path", "NUL character"),
    ("[feed]\npairs = " + "[" * 5000 + "]" * 5000 + "\n", "{path}", "nested too deeply"),
    ("[feed]\npairs = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "{path}", "nested too deeply"),
    ("[" + ".".join(["a"] * 5000) + "]\n", "a", "unknown key"),
    ("[feed]\npairs = [" + "[" * 100 + "]" * 100 + "]\n", "feed.pairs[0]", "must be a string"),
]


@pytest.mark.parametrize(
    ("text", "key", "problem"), CRASHERS, ids=[f"{k}:{p}" for _, k, p in CRASHERS]
)
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_values_that_crashed_the_checker_are_named_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    text: str,
    key: str,
    problem: str,
) -> None:
    """Each is one named fault and exit 78 from check-config and serve alike, no traceback."""
    path = write(tmp_path, text)
    argv = (
        ["check-config", str(path)]
        if command == "check-config"
        else ["serve", "--config", str(path)]
    )
    assert cli.main(argv) == 78
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == f"bittrade-feed: invalid config {path}:"
    assert lines[1].startswith(f"  {key.format(path=path)}: "), lines
    assert problem in lines[1]
    assert all(len(line) < 400 for line in lines)
    assert "Traceback" not in err


def test_alerts_are_off_by_default_and_allowed_with_a_cluster() -> None:
    """Alerts stay off unless asked for; in a cluster they live in Redis, so both combine."""
    assert not load_config(None).alerts.enabled
    assert parse_config({"alerts": {"enabled": True}}).alerts.enabled
    both = {"alerts": {"enabled": True}, "cluster": {"redis_url": "redis://127.0.0.1:6379/0"}}
    config = parse_config(both)
    assert config.alerts.enabled and config.cluster.enabled
