"""Real ``redis-server`` (and ``--sentinel``) processes on free loopback ports, for tests.

Each server gets its own temporary directory; ``stop()`` kills it if the test has not.
``redis-server --port 0`` would disable TCP, so a free port is picked first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server child; restartable on the same port and directory."""

    dir: Path
    port: int = field(default_factory=free_port)
    persist: bool = False
    extra: tuple[str, ...] = ()
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        """The command line."""
        assert REDIS_SERVER is not None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            *persistence,
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.dir / "redis.log"),
            *self.extra,
        ]

    async def start(self) -> None:
        """Start it and wait until it answers PING."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.args(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        await self.until_up()

    async def until_up(self) -> None:
        """Wait until it answers."""
        client = self.client()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    assert self.proc is not None and self.proc.returncode is None, self.log()
                    with contextlib.suppress(Exception):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def client(self) -> Redis:
        """A fresh client (close it)."""
        return Redis(
            port=self.port, decode_responses=True, socket_timeout=2.0, retry=Retry(NoBackoff(), 0)
        )

    def log(self) -> str:
        """Its log file."""
        path = self.dir / "redis.log"
        return path.read_text() if path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send a signal (SIGSTOP/SIGCONT to freeze it)."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    async def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: everything not on disk is gone."""
        client = self.client()
        with contextlib.suppress(Exception):
            await client.execute_command("SHUTDOWN", "NOSAVE")
        await client.aclose()
        await self.wait_exit()

    async def wait_exit(self) -> None:
        """Wait for the process to end."""
        assert self.proc is not None
        async with asyncio.timeout(10):
            await self.proc.wait()

    async def stop(self) -> None:
        """Kill it (idempotent)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            async with asyncio.timeout(10):
                await self.proc.wait()


@contextlib.asynccontextmanager
async def running(server: RedisServer) -> AsyncIterator[RedisServer]:
    """Start ``server`` and always stop it."""
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (make test-deps installs it)"
)


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A fresh redis-server without persistence."""
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed: run scripts/test-deps.sh")
    async with running(RedisServer(tmp_path / "redis")) as server:
        yield server


@dataclass
class SentinelSet:
    """One primary, one replica and three sentinels watching them as ``mymaster``."""

    dir: Path
    master_name: str = "mymaster"
    server_args: tuple[str, ...] = ()
    """Extra ``redis-server`` arguments for the primary and the replica alike."""
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[RedisServer] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every sentinel."""
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    async def start(self) -> None:
        """Start the primary, its replica, then the sentinels; wait for the replica to sync."""
        primary = RedisServer(self.dir / "primary", extra=self.server_args)
        await primary.start()
        replica = RedisServer(
            self.dir / "replica",
            extra=("--replicaof", "127.0.0.1", str(primary.port), *self.server_args),
        )
        await replica.start()
        self.servers = [primary, replica]
        for i in range(3):
            sdir = self.dir / f"sentinel{i}"
            sdir.mkdir(parents=True)
            conf = sdir / "sentinel.conf"
            port = free_port()
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {sdir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 4000\n"
            )
            sentinel = _SentinelProcess(sdir, port=port, conf=conf)
            await sentinel.start()
            self.sentinels.append(sentinel)
        client = replica.client()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while (await client.info("replication")).get("master_link_status") != "up":
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def primary_port(self) -> int:
        """The port the sentinels currently name as primary."""
        client = self.sentinels[0].client()
        try:
            _, port = await client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
            )
        finally:
            await client.aclose()
        return int(port)

    async def role(self, server: RedisServer) -> str:
        """``master`` or ``slave``, as ``server`` itself says."""
        client = server.client()
        try:
            return str((await client.info("replication"))["role"])
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """Kill every process."""
        for proc in [*self.sentinels, *self.servers]:
            await proc.stop()


@dataclass
class _SentinelProcess(RedisServer):
    """``redis-server <conf> --sentinel`` (Debian ships no separate redis-sentinel)."""

    conf: Path = Path()

    def args(self) -> list[str]:
        """The command line."""
        assert REDIS_SERVER is not None
        return [REDIS_SERVER, str(self.conf), "--sentinel", "--logfile", str(self.dir / "log")]
