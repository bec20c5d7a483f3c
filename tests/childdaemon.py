"""The daemon as a real child process: a config file writer, the child, a notify socket.

Shared by ``test_cli``, ``test_systemd`` and ``test_reload``; every child is killed when its
test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

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
