"""Daemons of one cluster as child processes, SSE clients that hop between them, a checker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.childdaemon import Daemon, config_dict, run_daemon, write_config
from tests.cluster.redisproc import free_port
from tests.fakeexchange import FakeExchanges

LEASE_MS = 1500
INTERVAL = 0.5


@dataclass
class Node:
    """One daemon of the cluster."""

    name: str
    daemon: Daemon
    db: Path
    """Its SQLite replica."""

    @property
    def url(self) -> str:
        """Its base URL."""
        return self.daemon.url

    async def json(self, path: str) -> tuple[int, Any]:
        """Status and decoded body of ``GET path`` (599 if it does not answer)."""
        try:
            async with asyncio.timeout(2):
                status, body = await self.daemon.get(path)
        except (aiohttp.ClientError, TimeoutError):
            return 599, None
        return status, json.loads(body) if body.startswith(("{", "[")) else body

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        """Status and decoded body of ``POST path`` with a JSON body."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url + path, json=body, timeout=aiohttp.ClientTimeout(5)) as resp,
        ):
            text = await resp.text()
            return resp.status, json.loads(text) if text.startswith(("{", "[")) else text

    async def cluster(self) -> dict[str, Any]:
        """Its ``/api/cluster`` view (empty if it does not answer)."""
        status, body = await self.json("/api/cluster")
        return body if status == 200 else {}

    async def ready(self) -> bool:
        """Whether ``/readyz`` says 200."""
        status, _ = await self.json("/readyz")
        return status == 200

    async def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics``."""
        status, text = await self.json("/metrics")
        assert status == 200
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")


@contextlib.asynccontextmanager
async def cluster(
    tmp: Path, fx: FakeExchanges, redis_url: str, n: int, **cluster_keys: Any
) -> AsyncIterator[list[Node]]:
    """``n`` daemons on one Redis; each killed when the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(node(tmp, fx, redis_url, f"n{i}", **cluster_keys))
            for i in range(n)
        ]
        for each in nodes:
            await each.daemon.until_answers()
        yield nodes


@contextlib.asynccontextmanager
async def node(
    tmp: Path,
    fx: FakeExchanges,
    redis_url: str,
    name: str,
    *,
    port: int = 0,
    server: dict[str, Any] | None = None,
    feed: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
    **cluster_keys: Any,
) -> AsyncIterator[Node]:
    """One daemon of the cluster (started, not yet answering); ``alerts``: its [alerts]."""
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    raw = config_dict(
        home,
        fx,
        port,
        feed={"interval": INTERVAL, **(feed or {})},
        cluster={"redis_url": redis_url, "node_name": name, "lease_ms": LEASE_MS, **cluster_keys},
        **({"alerts": alerts} if alerts else {}),
    )
    raw["server"].update(server or {})
    path = write_config(home / "config.toml", raw)
    async with run_daemon(path, home, port=port) as daemon:
        yield Node(name, daemon, home / "feed.sqlite3")


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Await ``check()`` until it returns something truthy; fail with ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def leader_of(nodes: list[Node], timeout: float = 10.0) -> Node:
    """The one node that says it leads (waits until exactly one does)."""

    async def one() -> Node | None:
        views = [await n.cluster() for n in nodes]
        leading = [n for n, v in zip(nodes, views, strict=True) if v.get("is_leader")]
        return leading[0] if len(leading) == 1 else None

    found: Node = await eventually(one, timeout, "exactly one leader")
    return found


async def until_prices(clients: list[Client], more: int, timeout: float = 10.0) -> None:
    """Wait until every client has ``more`` price events beyond what it has now."""
    goal = [len(c.price_ids()) + more for c in clients]

    async def done() -> bool:
        return all(len(c.price_ids()) >= g for c, g in zip(clients, goal, strict=True))

    await eventually(done, timeout, f"{more} more prices on every client")


async def not_leading(n: Node) -> dict[str, Any] | None:
    """Its view once it has stepped down and seen another holder (a fresh lease round)."""
    view = await n.cluster()
    fresh = view and view["leader"] and not view["leader"].startswith(n.name + ":")
    return view if fresh and not view["is_leader"] else None


@dataclass
class Client:
    """An SSE subscriber that resumes with its Last-Event-ID, on the next node if need be."""

    urls: list[str]
    events: list[tuple[str, int | None, Any, str]] = field(default_factory=list)
    """(event, id, data, node url) in arrival order."""
    arrived: list[float] = field(default_factory=list)
    """The monotonic time each of ``events`` arrived."""
    at: int = 0
    last_id: int | None = None
    task: asyncio.Task[None] | None = None
    connects: int = 0

    def start(self) -> Client:
        """Start reading in the background."""
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop reading."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def move(self, index: int) -> None:
        """Drop the connection and resume on node ``index`` with the last id seen."""
        await self.stop()
        self.at = index
        self.start()

    def price_ids(self) -> list[int]:
        """Ids of the price events received."""
        return [i for e, i, _, _ in self.events if e == "price" and i is not None]

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                url = self.urls[self.at % len(self.urls)]
                headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
                try:
                    timeout = aiohttp.ClientTimeout(total=None, sock_connect=1, sock_read=5)
                    async with session.get(
                        url + "/api/price-stream", headers=headers, timeout=timeout
                    ) as resp:
                        if resp.status != 200:
                            raise aiohttp.ClientError(f"status {resp.status}")
                        self.connects += 1
                        await self._read(resp, url)
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    pass
                # A dropped stream resumes on the next node, as a load balancer would send it.
                self.at += 1
                await asyncio.sleep(0.1)

    async def _read(self, resp: aiohttp.ClientResponse, url: str) -> None:
        while True:
            frame = await resp.content.readuntil(b"\n\n")
            event, ident, data = "message", None, None
            for line in frame.decode().strip("\n").split("\n"):
                key, _, value = line.partition(": ")
                if key == "event":
                    event = value
                elif key == "id":
                    ident = int(value) if value else None
                elif key == "data":
                    data = json.loads(value)
            if data is None:
                continue
            self.events.append((event, ident, data, url))
            self.arrived.append(time.monotonic())
            if event in ("price", "resync"):
                self.last_id = ident


def received(client: Client) -> list[tuple[str | None, str, Any]]:
    """The client's events in the form ``tests.streamcheck.check_stream`` reads."""
    return [(None if i is None else str(i), e, d) for e, i, d, _ in client.events]


def check_clients(clients: list[Client]) -> dict[int, Any]:
    """For every client: ids strictly increase, every gap follows a resync; one payload per id."""
    payloads: dict[int, Any] = {}

    def same(tick: dict[str, Any], where: str) -> None:
        old = payloads.setdefault(tick["id"], tick)
        assert old == tick, f"id {tick['id']} carries two payloads: {old} and {tick} ({where})"

    for n, client in enumerate(clients):
        prev: int | None = None
        resynced = True  # the first event may start anywhere
        for event, ident, data, url in client.events:
            if event == "resync":
                for tick in data["ticks"]:
                    same(tick, url)
                prev, resynced = ident, True
            elif event == "price":
                same(data, url)
                assert ident == data["id"]
                if prev is not None:
                    assert ident > prev, f"client {n}: id {ident} after {prev} ({url})"
                    assert ident == prev + 1 or resynced, (
                        f"client {n}: silent gap {prev} -> {ident} ({url})"
                    )
                prev, resynced = ident, False
    return payloads
