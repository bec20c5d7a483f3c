"""Alert races through the HTTP API and the engine, each run under many seeded schedules.

Wherever code awaits between a check and the act it guards, these run the two at once:

- a secret rotation while the outbox worker signs due rows: every request verifies with
  the secret before or the one after (never with neither);
- manual retries (``POST /api/alerts/deliveries/{id}/retry``) while the worker settles
  the same rows: no row is lost, and a retry never puts a delivered row back (so each
  delivery is answered 2xx exactly once);
- a rule replaced or deleted while ``engine.step`` commits a firing of the old version:
  no firing stays for a deleted rule, and the old version's change never lands over the
  new one.

They go through the HTTP API and the engine's public methods, so they hold whatever
store the outbox and endpoints live in.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient, AiohttpServer
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook, WebhookVerificationError

from bittrade_feed.alerts.rules import Frequency, Kind, Rule
from bittrade_feed.clock import SystemClock
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock
from tests.test_alert_endpoints import HOOKS, LOOPBACK, client_for
from tests.test_alert_engine import PAIR, UP, Rig, rows
from tests.test_alerts_api import RULES, config

WAIT = 15.0
"""Seconds a schedule may take to settle before the test fails."""


class Receiver:
    """Answers each request after a seeded delay with a seeded status; keeps all of it."""

    def __init__(self, rng: random.Random, fail: float) -> None:
        self.rng = rng
        self.fail = fail
        """Chance of a 500 (0 once the schedule is over)."""
        self.got: list[tuple[bytes, dict[str, str], int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(self.rng.random() * 0.005)
        status = 500 if self.rng.random() < self.fail else 200
        self.got.append((body, dict(request.headers), status))
        return web.Response(status=status)


async def receiving(aiohttp_server: AiohttpServer, receiver: Receiver) -> tuple[str, Any]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/hook")), server


async def rule_with_endpoint(
    client: TestClient[web.Request, web.Application], url: str
) -> tuple[dict[str, Any], int]:
    made = await client.post(HOOKS, json={"url": url})
    assert made.status == 201, await made.text()
    endpoint = await made.json()
    rule = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": [endpoint["id"]]}
    created = await client.post(RULES, json=rule)
    assert created.status == 201, await created.text()
    return endpoint, int((await created.json())["id"])


async def fire(client: TestClient[web.Request, web.Application], rule_id: int) -> int:
    answer = await client.post(f"{RULES}/{rule_id}/test")
    assert answer.status == 201, await answer.text()
    return int((await answer.json())["id"])


async def settle(check: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline, "the schedule did not settle"
        await asyncio.sleep(0.01)


# -- (a) rotation while signing ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(16))
async def test_a_rotation_during_attempts_signs_with_the_old_or_new_secret(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    receiver = Receiver(rng, 0.0)
    url, _server = await receiving(aiohttp_server, receiver)
    overlap = rng.choice([0, 300])  # 0: the old secret stops signing at once
    cfg = config(tmp_path / "f.db", rotation_overlap=overlap, **LOOPBACK)
    client = await client_for(aiohttp_client, cfg, FakeClock(time.time()))
    endpoint, rule_id = await rule_with_endpoint(client, url)
    firings = rng.randint(2, 6)
    rotated: dict[str, Any] = {}

    async def firing() -> list[int]:
        made = []
        for _ in range(firings):
            made.append(await fire(client, rule_id))
            await asyncio.sleep(rng.random() * 0.004)
        return made

    async def rotate() -> None:
        await asyncio.sleep(rng.random() * 0.02)
        answer = await client.post(f"{HOOKS}/{endpoint['id']}/rotate")
        assert answer.status == 200
        rotated.update(await answer.json())

    made, _ = await asyncio.gather(firing(), rotate())
    ids = {f"alert_{f}_webhook_{endpoint['id']}" for f in made}

    async def all_delivered() -> bool:
        return {h["webhook-id"] for _, h, _ in receiver.got} >= ids

    await settle(all_delivered)
    secrets = (Webhook(endpoint["secret"]), Webhook(rotated["secret"]))
    for body, headers, _ in receiver.got:
        assert any(verifies(hook, body, headers) for hook in secrets), (seed, headers)
    assert (await (await client.get("/api/alerts/deliveries")).json())["deliveries"] == []


def verifies(hook: Webhook, body: bytes, headers: dict[str, str]) -> bool:
    try:
        hook.verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


# -- (b) manual retries while the worker settles --------------------------------------------


@pytest.mark.parametrize("seed", range(16))
async def test_retries_during_attempts_lose_no_row_and_never_resurrect_a_delivered_one(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    receiver = Receiver(rng, rng.choice([0.3, 0.6, 0.9]))
    url, _server = await receiving(aiohttp_server, receiver)
    cfg = config(
        tmp_path / "f.db",
        max_attempts=rng.choice([1, 2]),
        retry_base=0.01,
        retry_cap=0.02,
        **LOOPBACK,
    )
    # The real clock: the worker's backoff must come due.
    client = await client_for(aiohttp_client, cfg, SystemClock())  # type: ignore[arg-type]
    endpoint, rule_id = await rule_with_endpoint(client, url)
    made = [await fire(client, rule_id) for _ in range(rng.randint(2, 5))]
    ids = [f"alert_{f}_webhook_{endpoint['id']}" for f in made]
    answers: Counter[int] = Counter()

    async def retry(delivery: str) -> None:
        answer = await client.post(f"/api/alerts/deliveries/{delivery}/retry")
        assert answer.status in (202, 409), await answer.text()
        answers[answer.status] += 1

    async def retrier() -> None:
        for _ in range(30):  # at random moments, on any row, whatever its state
            await asyncio.sleep(rng.random() * 0.006)
            await asyncio.gather(*(retry(rng.choice(ids)) for _ in range(rng.randint(1, 2))))

    await retrier()
    receiver.fail = 0.0  # the schedule is over: retry whatever failed until all are in

    async def all_delivered() -> bool:
        listed = (await (await client.get("/api/alerts/deliveries")).json())["deliveries"]
        for failed in listed:
            await retry(failed["id"])
        ok = {h["webhook-id"] for _, h, status in receiver.got if status == 200}
        return not listed and ok >= set(ids)

    await settle(all_delivered)
    await asyncio.sleep(0.05)  # a resurrected row would be sent again by now
    delivered = Counter(h["webhook-id"] for _, h, status in receiver.got if status == 200)
    assert delivered == dict.fromkeys(ids, 1), (seed, answers)
    for delivery in ids:  # delivered rows stay delivered
        answer = await client.post(f"/api/alerts/deliveries/{delivery}/retry")
        assert answer.status == 409


# -- (c) replace / delete while a firing of the old version commits -------------------------


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await Store.open(tmp_path / "alerts.sqlite3")
    try:
        made = Rig(tmp_path / "alerts.sqlite3", store, FakeClock())
        await made.start()
        yield made
    finally:
        await store.close()


async def yields(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("seed", range(40))
async def test_an_edit_during_a_commit_of_the_old_version(rig: Rig, seed: int) -> None:
    rng = random.Random(seed)
    deleting = seed % 2 == 0
    stored = await rig.engine.create("local", UP, max_rules=10)
    await rig.tick(99)
    await rig.drain()
    crossing = await rig.tick(101)  # the old version fires on it, in the next step
    # The new version: true on the next tick (102) whichever level the seed picks.
    level = Decimal(rng.choice(["100", "101.5"]))
    later = Rule(PAIR, Kind.ABOVE, level=level, frequency=Frequency())

    async def edit() -> None:
        await yields(rng.randint(0, 12))
        if deleting:
            await rig.engine.delete("local", stored.id, version=None)
        else:
            await rig.engine.replace("local", stored.id, later, version=None)

    async def step() -> None:
        await yields(rng.randint(0, 3))
        await rig.engine.step()

    await asyncio.gather(edit(), step())
    after = await rig.tick(102)
    await rig.drain()
    reported = {firing_id for _, firing_id in rig.fired}
    if deleting:
        assert rows(
            rig.path, f"SELECT COUNT(*) FROM alert_firings WHERE rule_id = {stored.id}"
        ) == [(0,)]
        assert await rig.alerts.get("local", stored.id) is None
        assert rig.engine.rules() == []
        return
    firings = {f.tick_id: f.id for f in await rig.alerts.firings("local", stored.id, 10)}
    # The old version's firing is there exactly when its commit came first (and so was
    # reported); the new version starts after the crossing and fires on the next tick.
    old = firings.pop(crossing.id, None)
    assert (old is not None) == (old in reported), (seed, firings, reported)
    assert set(firings) == {after.id}
    current = await rig.alerts.get("local", stored.id)
    assert current is not None and current.version == 2 and current.rule == later
    assert current.state.fired == 1 and current.state.done  # the new version's own state
    (entry,) = rig.engine.rules()
    assert entry.version == 2 and entry.state.fired == 1
