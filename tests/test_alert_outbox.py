"""The webhook outbox worker against local aiohttp receivers (127.0.0.1 on the allow-list),
over each backend: SQLite, and Redis (where the restarted worker is another node's)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from bittrade_feed.alerts.backend import EndpointBackend, OutboxBackend, Retry
from bittrade_feed.alerts.endpoints import Endpoint
from bittrade_feed.alerts.outbox import OutboxWorker, backoff
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.ssrf import Policy, guarded_session
from bittrade_feed.clock import SystemClock
from bittrade_feed.ops.metrics import AlertMetrics
from tests.alertbackends import BACKENDS, Backend, open_backend

LOOPBACK = Policy.of(allow_http=True, allow=["127.0.0.1/32"])
WAIT = 10.0
"""Seconds a test waits for a delivery before failing."""


class Receiver:
    """Answers with the statuses in ``script`` (then 200) and keeps every request."""

    def __init__(self, *script: int, retry_after: str | None = None) -> None:
        self.script = list(script)
        self.retry_after = retry_after
        self.got: list[tuple[float, bytes, dict[str, str]]] = []
        self.arrived = asyncio.Event()
        self.hold: asyncio.Event | None = None
        """Set: requests wait for it before being answered (a send in flight)."""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((time.monotonic(), await request.read(), dict(request.headers)))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        status = self.script.pop(0) if self.script else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status != 200 else {}
        return web.Response(status=status, headers=headers)

    async def wait_for(self, count: int) -> None:
        async def reach() -> None:
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(reach(), WAIT)


@dataclass
class Rig:
    backend: Backend
    metrics: AlertMetrics

    @property
    def endpoints(self) -> EndpointBackend:
        return self.backend.endpoints

    def worker(
        self, policy: Policy = LOOPBACK, max_attempts: int = 5, rows: OutboxBackend | None = None
    ) -> OutboxWorker:
        return OutboxWorker(
            rows or self.backend.outbox,
            SystemClock(),
            policy,
            lambda: guarded_session(policy, timeout=5, user_agent="test"),
            max_attempts=max_attempts,
            retry_base=0.05,
            retry_cap=0.2,
            metrics=self.metrics,
            rand=random.Random(7),
        )

    async def fire(self, *endpoints: Endpoint) -> str:
        """A committed firing of a new rule naming ``endpoints``; its first webhook row id."""
        body = {"pair": "BTC-USD", "kind": "above", "level": "1"}
        rule = parse_rule({**body, "webhooks": [e.id for e in endpoints]})
        now_ms = round(time.time() * 1000)
        alerts = self.backend.rules
        stored = await alerts.create("local", rule, last_tick_id=0, now_ms=now_ms, max_rules=9)
        firing = await alerts.test_fire("local", stored.id, {"pair": "BTC-USD"}, now_ms)
        return f"alert_{firing.id}_webhook_{endpoints[0].id}"

    def count(self, outcome: str) -> float:
        return self.metrics.deliveries.labels(outcome)._value.get()


@pytest.fixture(params=BACKENDS)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """The worker over each backend (SQLite on one daemon, Redis in a cluster)."""
    async with open_backend(request.param, tmp_path) as backend:
        yield Rig(backend, AlertMetrics(CollectorRegistry()))


async def serve(aiohttp_server: AiohttpServer, receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    return await aiohttp_server(app, host="127.0.0.1")


def states(rig: Rig) -> Callable[[], object]:
    return rig.backend.states


async def until(check: Callable[[], object], predicate: Callable[[object], bool]) -> object:
    deadline = time.monotonic() + WAIT
    while True:
        value = await check()  # type: ignore[misc]
        if predicate(value):
            return value
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.02)


async def run(worker: OutboxWorker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@given(
    st.integers(1, 200),
    st.floats(0.01, 100),
    st.floats(0.01, 10_000),
    st.none() | st.floats(0, 86_400),
    st.integers(0, 2**32),
)
def test_backoff_is_full_jitter_capped_unless_retry_after_asks_longer(
    attempts: int, base: float, cap: float, after: float | None, seed: int
) -> None:
    wait = backoff(attempts, base, cap, random.Random(seed), after)
    ceiling = min(cap, base * 2.0 ** (attempts - 1))
    if after is None:
        assert 0 <= wait <= ceiling
    else:
        assert wait == max(after, wait) and wait >= after
        assert wait <= max(after, ceiling)


async def test_500_then_200_retries_with_one_id_and_a_verified_signature(
    rig: Rig, aiohttp_server: AiohttpServer
) -> None:
    receiver = Receiver(500, 500)
    server = await serve(aiohttp_server, receiver)
    endpoint = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    row = await rig.fire(endpoint)
    task = await run(rig.worker())
    try:
        await receiver.wait_for(3)
        await until(states(rig), lambda s: s[row][0] == "delivered")  # type: ignore[index]
    finally:
        await stop(task)
    assert {h["webhook-id"] for _, _, h in receiver.got} == {row}
    for _, body, headers in receiver.got:
        assert Webhook(endpoint.secret).verify(body, headers)["type"] == "alert.fired"
    assert (rig.count("retry"), rig.count("delivered")) == (2, 1)
    assert rig.metrics.outbox_depth._value.get() == 0


async def test_retry_after_is_honoured(rig: Rig, aiohttp_server: AiohttpServer) -> None:
    receiver = Receiver(503, retry_after="1")
    server = await serve(aiohttp_server, receiver)
    endpoint = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    await rig.fire(endpoint)
    task = await run(rig.worker())
    try:
        await receiver.wait_for(2)
    finally:
        await stop(task)
    assert receiver.got[1][0] - receiver.got[0][0] >= 0.9  # retry_cap alone is 0.2 s


async def test_410_disables_the_endpoint(rig: Rig, aiohttp_server: AiohttpServer) -> None:
    receiver = Receiver(410)
    server = await serve(aiohttp_server, receiver)
    endpoint = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    first = await rig.fire(endpoint)
    task = await run(rig.worker())
    try:
        await until(states(rig), lambda s: s[first][0] == "failed")  # type: ignore[index]
        second = await rig.fire(endpoint)
        # a firing queued before the rule noticed: no row (the endpoint is disabled)
        assert second not in await states(rig)()  # type: ignore[operator]
    finally:
        await stop(task)
    assert len(receiver.got) == 1
    stored = await rig.endpoints.get("local", endpoint.id)
    assert stored is not None and stored.disabled_ms is not None
    assert rig.metrics.endpoints_disabled._value.get() == 1
    assert await rig.backend.deliveries.retry("local", first, 0) is Retry.ENDPOINT_GONE
    assert rig.count("gone") == 1


async def test_gives_up_after_max_attempts(rig: Rig, aiohttp_server: AiohttpServer) -> None:
    receiver = Receiver(*[500] * 10)
    server = await serve(aiohttp_server, receiver)
    endpoint = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    row = await rig.fire(endpoint)
    task = await run(rig.worker(max_attempts=3))
    try:
        done = await until(states(rig), lambda s: s[row][0] == "failed")  # type: ignore[index]
    finally:
        await stop(task)
    assert done[row][1] == 3 and "gave up after 3" in done[row][2]  # type: ignore[index]
    assert len(receiver.got) == 3


async def test_rotation_verifies_with_both_secrets(rig: Rig, aiohttp_server: AiohttpServer) -> None:
    receiver = Receiver()
    server = await serve(aiohttp_server, receiver)
    made = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    now_ms = round(time.time() * 1000)
    rotated = await rig.endpoints.rotate("local", made.id, now_ms=now_ms, overlap_ms=60_000)
    assert rotated is not None
    await rig.fire(rotated)
    task = await run(rig.worker())
    try:
        await receiver.wait_for(1)
    finally:
        await stop(task)
    _, body, headers = receiver.got[0]
    for secret in (made.secret, rotated.secret):
        Webhook(secret).verify(body, headers)


async def test_the_guard_refuses_a_name_resolving_to_loopback_at_connect_time(
    rig: Rig, aiohttp_server: AiohttpServer
) -> None:
    receiver = Receiver()
    server = await serve(aiohttp_server, receiver)
    url = f"http://localhost:{server.port}/hook"  # a name: only the resolver sees 127.0.0.1
    endpoint = await rig.endpoints.create("local", url, now_ms=0, limit=9)
    row = await rig.fire(endpoint)
    task = await run(rig.worker(Policy.of(allow_http=True)))
    try:
        done = await until(states(rig), lambda s: s[row][0] == "failed")  # type: ignore[index]
    finally:
        await stop(task)
    assert "not a public address" in done[row][2]  # type: ignore[index]
    assert receiver.got == []
    assert rig.count("refused") == 1


async def test_a_worker_killed_mid_send_delivers_after_restart_with_the_same_id(
    rig: Rig, aiohttp_server: AiohttpServer
) -> None:
    receiver = Receiver()
    receiver.hold = asyncio.Event()  # the first request is in flight when the worker dies
    server = await serve(aiohttp_server, receiver)
    endpoint = await rig.endpoints.create("local", str(server.make_url("/hook")), now_ms=0, limit=9)
    row = await rig.fire(endpoint)  # committed: the firing and its row
    task = await run(rig.worker())
    await receiver.wait_for(1)
    await stop(task)  # killed after the commit, before the send ended
    assert (await states(rig)())[row][0] == "pending"  # type: ignore[index]
    receiver.hold.set()
    # The restarted daemon's worker (in a cluster: the new leader's, on its own connection).
    task = await run(rig.worker(rows=rig.backend.twin().outbox))
    try:
        await receiver.wait_for(2)
        await until(states(rig), lambda s: s[row][0] == "delivered")  # type: ignore[index]
    finally:
        await stop(task)
    assert [h["webhook-id"] for _, _, h in receiver.got] == [row, row]
    Webhook(endpoint.secret).verify(receiver.got[1][1], receiver.got[1][2])
