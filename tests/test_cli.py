"""The ``bittrade-feed`` command run as a real process: exit codes, listeners, signals.

The helpers here (a config file writer, a child daemon, a notify socket) are shared by
``test_systemd`` and ``test_reload``; every child is killed when its test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import unused_port

from tests.daemon import PAIR, SOURCES
from tests.fakeexchange import FakeExchanges

START_TIMEOUT = 20.0
"""Bound on a child's start-up (interpreter, imports, first fetch cycle)."""


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for configs: strings, numbers, booleans, lists and tables."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", to_toml(value, name + ".")]
    return "\n".join(lines) + "\n"


def config_dict(
    tmp: Path, fx: FakeExchanges, port: int, sources: tuple[str, ...] = SOURCES, **sections: Any
) -> dict[str, Any]:
    """A daemon config as a TOML-ready dict: fake exchanges, a fast interval, JSON logs."""
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 2.0},
        "database": {"path": str(tmp / "feed.sqlite3")},
        "feed": {
            "pairs": [PAIR],
            "interval": 0.5,
            "request_timeout": 0.25,
            "max_attempts": 1,
            "sources": {PAIR: list(sources)},
        },
        "aggregation": {"quorum": min(2, len(sources))},
        "exchanges": {name: {"base_url": fx.url(name)} for name in sources},
        "log": {"level": "info", "format": "json"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    """Write ``raw`` as TOML to ``path``."""
    path.write_text(to_toml(raw))
    return path


@dataclass
class Note:
    """One sd_notify datagram: when it arrived and its assignments."""

    at: float
    fields: dict[str, str]

    def has(self, assignment: str) -> bool:
        """Whether it carries ``KEY=value`` (or just ``KEY``, any value)."""
        key, _, value = assignment.partition("=")
        return key in self.fields and (not value or self.fields[key] == value)


@dataclass
class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    address: str = field(default_factory=lambda: f"@bittrade-test-{secrets.token_hex(8)}")
    notes: list[Note] = field(default_factory=list)

    async def __aenter__(self) -> NotifySocket:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setblocking(False)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self.sock.close()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            lines = data.decode().split("\n")
            self.notes.append(Note(time.monotonic(), dict(x.partition("=")[::2] for x in lines)))

    async def expect(self, assignment: str, *, after: int = 0, timeout: float = 10.0) -> int:
        """Index of the first datagram from ``after`` on carrying ``assignment``."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(after, len(self.notes)):
                    if self.notes[i].has(assignment):
                        return i
                await asyncio.sleep(0.01)


@dataclass
class Daemon:
    """A ``bittrade-feed serve`` child process."""

    proc: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of its API."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything it wrote to stderr so far."""
        return self.log_path.read_text()

    def events(self) -> list[dict[str, Any]]:
        """Its JSON log lines."""
        return [json.loads(x) for x in self.log().splitlines() if x.startswith("{")]

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child."""
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 15.0) -> int:
        """Its exit code."""
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def get(self, path: str) -> tuple[int, str]:
        """Status and body of ``GET path`` on its API."""
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def until_answers(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``/healthz`` answers 200."""
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                assert self.proc.returncode is None, self.log()
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def run_daemon(
    config: Path | None,
    tmp: Path,
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
    command: str = "serve",
    wrapper: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
) -> AsyncIterator[Daemon]:
    """Start ``bittrade-feed <command> --config <config>``; kill it if the test leaves it up."""
    log_path = tmp / f"daemon-{secrets.token_hex(4)}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    child_env.pop("WATCHDOG_USEC", None)
    child_env.update(env or {})
    args = [sys.executable, "-m", "bittrade_feed.cli", command]
    if config is not None:
        args += ["--config", str(config)] if command == "serve" else [str(config)]
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *wrapper,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=child_env,
            pass_fds=pass_fds,
        )
    try:
        yield Daemon(proc, port, log_path)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


_ACTIVATE = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


# -- tests ---------------------------------------------------------------------------------


async def test_bad_config_exits_78_naming_the_key(tmp_path: Path, fx: FakeExchanges) -> None:
    """A config with a bad value exits 78 (EX_CONFIG) and names the key on stderr."""
    raw = config_dict(tmp_path, fx, unused_port(), feed={"interval": -1})
    config = write_config(tmp_path / "config.toml", raw)
    async with run_daemon(config, tmp_path) as daemon:
        assert await daemon.wait() == 78
    assert "feed.interval: -1 is out of range" in daemon.log()
    assert "Traceback" not in daemon.log()


async def test_check_config_accepts_a_good_file(tmp_path: Path, fx: FakeExchanges) -> None:
    """``check-config`` exits 0 on a valid file and starts nothing."""
    config = write_config(tmp_path / "config.toml", config_dict(tmp_path, fx, unused_port()))
    async with run_daemon(config, tmp_path, command="check-config") as daemon:
        assert await daemon.wait() == 0
    assert "configuration valid (BTC-USDT)" in daemon.log()
    assert not (tmp_path / "feed.sqlite3").exists()


async def test_unusable_database_exits_1_with_a_logged_reason(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A database path that cannot be created is fatal: exit 1, one JSON line saying why."""
    (tmp_path / "file").write_text("not a directory")
    raw = config_dict(tmp_path, fx, unused_port(), database={"path": str(tmp_path / "file/db")})
    async with run_daemon(write_config(tmp_path / "c.toml", raw), tmp_path) as daemon:
        assert await daemon.wait() == 1
    fatal = [e for e in daemon.events() if e["event"] == "fatal"]
    assert len(fatal) == 1
    assert "cannot open database" in fatal[0]["reason"]
    assert fatal[0]["level"] == "error"


async def test_port_in_use_exits_1(tmp_path: Path, fx: FakeExchanges) -> None:
    """A listen address that is taken is fatal (exit 1) and logged, with the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        raw = config_dict(tmp_path, fx, port)
        async with run_daemon(write_config(tmp_path / "c.toml", raw), tmp_path) as daemon:
            assert await daemon.wait() == 1
    (fatal,) = [e for e in daemon.events() if e["event"] == "fatal"]
    assert str(port) in fatal["reason"]


async def test_sigterm_stops_cleanly_with_exit_0(tmp_path: Path, fx: FakeExchanges) -> None:
    """SIGTERM closes the open streams and the process exits 0, logging ``stopped``."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with run_daemon(config, tmp_path, port=port) as daemon:
        await daemon.until_answers()
        async with (
            aiohttp.ClientSession() as session,
            session.get(daemon.url + "/api/price-stream") as stream,
        ):
            await stream.content.readuntil(b"\n\n")
            daemon.signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                rest = await stream.content.read()  # the daemon ends the stream
            assert stream.content.at_eof(), rest
        assert await daemon.wait() == 0
    assert [e["event"] for e in daemon.events()][-2:] == ["shutting down", "stopped"]


async def test_metrics_on_their_own_address(tmp_path: Path, fx: FakeExchanges) -> None:
    """``server.metrics_host/port`` serve /metrics alone on a second listener."""
    port, metrics_port = unused_port(), unused_port()
    raw = config_dict(
        tmp_path, fx, port, server={"metrics_host": "127.0.0.1", "metrics_port": metrics_port}
    )
    async with run_daemon(write_config(tmp_path / "c.toml", raw), tmp_path, port=port) as daemon:
        await daemon.until_answers()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            async with session.get(f"http://127.0.0.1:{metrics_port}/api/price") as resp:
                assert resp.status == 404
        assert 'bittrade_feed_build_info{python_version="' in text
        assert "bittrade_feed_store_rows " in text
        assert "process_cpu_seconds_total" in text


async def test_socket_activation_serves_on_the_passed_socket(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """With ``LISTEN_FDS``/``LISTEN_PID`` the API answers on the inherited socket (fd 3)."""
    configured = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, configured))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        # As systemd does: the socket at fd 3, and LISTEN_PID naming the process that execs.
        wrapper = (sys.executable, "-c", _ACTIVATE, str(fd))
        env = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "bittrade-feed.socket"}
        async with run_daemon(
            config, tmp_path, port=port, env=env, wrapper=wrapper, pass_fds=(fd,)
        ) as daemon:
            listener.close()  # only the daemon holds it now
            await daemon.until_answers()
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", configured)) != 0
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    (listening,) = [e for e in daemon.events() if e["event"] == "listening"]
    assert listening["socket_activated"] is True
