"""Property tests: any mutation of config.example.toml gets exit 0 or 78, naming a key.

``check-config`` and ``serve`` read a file the same way, so wherever check-config says 78,
serve says 78 with the same lines; where it says 0, serve starts (run for a small sample).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp.test_utils import unused_port
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bittrade_feed import cli

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"
BASE: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
KEYS = [(section, key) for section, table in BASE.items() for key in table]


# -- a small TOML writer for any value a mutation can produce ----------------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key(key: str) -> str:
    """A bare key where TOML allows one, else a quoted one."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def to_toml(doc: dict[str, Any]) -> str:
    """A whole document: top-level values first, then one ``[table]`` per table."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- mutations -------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(-(10**500), 10**500),
    st.floats(),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**63, 0.0, 1e308, 5e-324]),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "http://[::1",
            "http://user:pw@[::1",
            "http://h:99999",
            "~nouser-bittrade/x.sqlite3",
            "data/\0x.sqlite3",
            "BTC-USD",
            "simulated",
            "median",
            "0.0.0.0:80",
        ]
    ),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
deep = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The example file with one to three changes: values, keys, nesting or raw bytes."""
    doc = json.loads(json.dumps(BASE))
    text: str | None = None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "new key", "section", "deep"]))
        if kind == "value":
            section, key = draw(st.sampled_from(KEYS))
            if isinstance(doc[section], dict):
                doc[section][key] = draw(values)
        elif kind == "new key":
            section = draw(st.sampled_from([*BASE, "exchanges", "nope"]))
            if isinstance(doc.setdefault(section, {}), dict):
                doc[section][draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif kind == "section":
            doc[draw(st.sampled_from(list(BASE)))] = draw(values)
        else:
            section, key = draw(st.sampled_from(KEYS))
            text = to_toml(doc).replace(f"\n{key} = ", f"\n{key} = {draw(deep)}\n_x = ", 1)
    text = text if text is not None else to_toml(doc)
    if draw(st.booleans()) and draw(st.booleans()):
        raw = bytearray(text.encode())
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        return raw.decode("utf-8", "surrogateescape")
    return text


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _top_level_keys(path: Path) -> set[str]:
    try:
        return set(tomllib.loads(path.read_bytes().decode()))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return set()


def _check(text: str, directory: Path) -> tuple[Path, int, str]:
    path = directory / "config.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    code, out, err = _run(["check-config", str(path)])
    assert code in (0, 78), (code, err)
    assert "Traceback" not in err
    if code == 0:
        assert "configuration valid" in out
        return path, code, err
    lines = err.splitlines()
    assert lines[0] == f"bittrade-feed: invalid config {path}:"
    top = _top_level_keys(path)
    for line in lines[1:]:
        assert line.startswith("  "), line
        key = line[2:].split(": ", 1)[0]
        named = key == str(path) or any(key == k or key.startswith((f"{k}.", f"{k}[")) for k in top)
        assert named, (line, top)
    return path, code, err


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(text=mutated())
@example(text=EXAMPLE.read_text().replace("interval = 30.0", "interval = 1" + "0" * 399))
@example(text=EXAMPLE.read_text().replace("port = 8080", "port = " + "9" * 5000))
@example(text=EXAMPLE.read_text().replace('level = "info"', "level = " + "[" * 5000))
@example(text=EXAMPLE.read_text() + '[exchanges.kraken]\nbase_url = "http://a:b@[::1"\n')
@example(text=EXAMPLE.read_text().replace("[database]", '"\\u001e" = 1\n"\\u2028" = 2\n[database]'))
@example(
    text=EXAMPLE.read_text().replace("# path = ", "path = ").replace('.sqlite3"', '\\u0000"', 1)
)
def test_any_mutation_is_exit_0_or_78_naming_a_key(text: str) -> None:
    """check-config exits 0 or 78 naming keys; serve refuses the same files the same way."""
    with tempfile.TemporaryDirectory() as tmp:
        path, code, err = _check(text, Path(tmp))
        if code == 78:
            assert _run(["serve", "--config", str(path)])[::2] == (78, err)


# -- serve on files check-config accepts (a handful, as real processes) -----------------

OFFLINE_KEYS = [
    (s, k)
    for s, k in KEYS
    if s in ("aggregation", "stream", "log")
    or (s, k)
    in {
        ("feed", "interval"),
        ("feed", "max_attempts"),
        ("server", "shutdown_timeout"),
        ("server", "backlog"),
    }
]


def _offline(port: int, db: Path) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    doc["server"]["port"] = port
    doc["database"] = {"path": str(db)}
    doc["feed"]["sources"] = {"BTC-USD": ["simulated"]}
    doc["feed"]["interval"] = 0.5
    doc["feed"]["request_timeout"] = 0.25
    doc["aggregation"]["quorum"] = 1
    return doc


def _answers(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
        time.sleep(0.05)
    return False


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(OFFLINE_KEYS), values), min_size=1, max_size=2))
@example(changes=[(("stream", "ws_ops_burst"), 1)])
@example(changes=[(("database", "path"), "data/\0x.sqlite3")])
def test_serve_agrees_with_check_config(changes: list[tuple[tuple[str, str], Any]]) -> None:
    """A file check-config accepts starts and stops cleanly; one it refuses, serve refuses."""
    with tempfile.TemporaryDirectory() as tmp:
        port = unused_port()
        doc = _offline(port, Path(tmp) / "feed.sqlite3")
        for (section, key), value in changes:
            doc[section][key] = value
        path, code, err = _check(to_toml(doc), Path(tmp))
        serve = [sys.executable, "-m", "bittrade_feed.cli", "serve", "--config", str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
        with subprocess.Popen(
            serve, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        ) as proc:
            try:
                if code == 78:
                    _, stderr = proc.communicate(timeout=20)
                    assert (proc.returncode, stderr.decode()) == (78, err)
                    return
                assert _answers(port, proc), proc.stderr and proc.stderr.read().decode()
                proc.send_signal(signal.SIGTERM)
                _, stderr = proc.communicate(timeout=20)
                assert proc.returncode == 0, stderr.decode()
                assert b"Traceback" not in stderr
            finally:
                if proc.poll() is None:
                    proc.kill()
