"""The ``bittrade-feed`` command run as a real process: exit codes, listeners, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp.test_utils import unused_port

from bittrade_feed.config import default_backlog, load_config
from bittrade_feed.ops.systemd import listen_backlog
from tests.childdaemon import (
    Daemon,
    config_dict,
    run_daemon,
    write_config,
)
from tests.fakeexchange import FakeExchanges

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


@contextlib.asynccontextmanager
async def _socket_activated(
    config: Path, tmp_path: Path, backlog: int
) -> AsyncIterator[tuple[socket.socket, Daemon]]:
    """The daemon started as systemd does: a listening socket at fd 3 and ``LISTEN_PID``."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        wrapper = (sys.executable, "-c", _ACTIVATE, str(fd))
        env = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "bittrade-feed.socket"}
        async with run_daemon(
            config, tmp_path, port=port, env=env, wrapper=wrapper, pass_fds=(fd,)
        ) as daemon:
            yield listener, daemon


async def test_socket_activation_serves_on_the_passed_socket(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """With ``LISTEN_FDS``/``LISTEN_PID`` the API answers on the inherited socket (fd 3)."""
    configured = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, configured))
    async with _socket_activated(config, tmp_path, 128) as (listener, daemon):
        listener.close()  # only the daemon holds it now
        await daemon.until_answers()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", configured)) != 0
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    (listening,) = [e for e in daemon.events() if e["event"] == "listening"]
    assert listening["socket_activated"] is True


async def test_socket_activation_keeps_the_sockets_backlog(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """An inherited socket keeps its listen backlog (asyncio re-listens with aiohttp's 128)."""
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, unused_port()))
    async with _socket_activated(config, tmp_path, 1000) as (listener, daemon):
        await daemon.until_answers()
        # The same socket, so the kernel reports what the daemon's listen() left.
        assert listen_backlog(listener) == 1000
        assert _ss_backlog(listener.getsockname()[1]) == 1000
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


async def test_tcp_listener_uses_server_backlog(tmp_path: Path, fx: FakeExchanges) -> None:
    """``server.backlog`` is the TCP listener's backlog, as ``ss`` reports it."""
    port = unused_port()
    raw = config_dict(tmp_path, fx, port, server={"backlog": 777})
    async with run_daemon(write_config(tmp_path / "c.toml", raw), tmp_path, port=port) as daemon:
        await daemon.until_answers()
        assert _ss_backlog(port) == 777
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0


def test_default_backlog_follows_somaxconn(tmp_path: Path) -> None:
    """The default backlog is somaxconn, kept within 128-65535; 4096 if it cannot be read."""
    somaxconn = tmp_path / "somaxconn"
    for text, expected in (("4096\n", 4096), ("100", 128), ("1000000", 65535), ("x", 4096)):
        somaxconn.write_text(text)
        assert default_backlog(str(somaxconn)) == expected
    assert default_backlog(str(tmp_path / "absent")) == 4096
    real = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert load_config(None).server.backlog == max(128, min(real, 65535))


def _ss_backlog(port: int) -> int:
    """The listen backlog of the TCP socket on ``port`` (``ss`` prints it as Send-Q)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    (line,) = out.splitlines()
    return int(line.split()[2])
