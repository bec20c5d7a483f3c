"""Alert events on the real endpoints: SSE and WebSocket, resume, owners, scope, validation.

The daemon's app runs on loopback with its real engine, store and hub; firings come from
ticks crossing a rule (through the tick log, as the fetcher hands them on) or from the
test-fire endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient

from bittrade_feed.config import Config, parse_config
from bittrade_feed.models import TickDraft
from bittrade_feed.server.alerts import ALERT_STORE
from bittrade_feed.server.state import HUB, TICKLOG
from tests.authutil import make_key, write_keys
from tests.streamutil import frames, parse
from tests.test_alerts_api import CROSS, RULES, bearer, client_for, config

Client = TestClient[Any, Any]
STREAM = "/api/price-stream"


async def tick(client: Client, price: str) -> int:
    """Commit a BTC-USD price through the tick log (the hub and the engine both hear it)."""
    stored = await client.app[TICKLOG].append(
        TickDraft("BTC-USD", Decimal(price), 1000, ("simulated",))
    )
    return stored.id


async def fire(client: Client, rule_id: int, headers: dict[str, str] | None = None) -> int:
    resp = await client.post(f"{RULES}/{rule_id}/test", headers=headers or {})
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def make_rule(client: Client, headers: dict[str, str] | None = None) -> int:
    resp = await client.post(RULES, json=CROSS, headers=headers or {})
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def sse_until(resp: ClientResponse, count: int, event: str) -> list[tuple[bytes, Any]]:
    """Raw frames with their parse, up to and including the ``count``-th ``event``."""
    out: list[tuple[bytes, Any]] = []
    seen = 0
    while seen < count:
        (raw,) = await frames(resp, 1)
        parsed = parse(raw)
        out.append((raw, parsed))
        seen += parsed[1] == event
    return out


def alert_ids(got: list[tuple[bytes, Any]]) -> list[int]:
    return [int(p[2]["id"]) for _, p in got if p[1] == "alert"]


async def ws_until(ws: aiohttp.ClientWebSocketResponse, count: int, event: str) -> list[Any]:
    out: list[Any] = []
    while sum(m["event"] == event for m in out) < count:
        out.append(await ws.receive_json(timeout=5))
    return out


async def test_sse_alert_event_has_no_id_and_resumes_by_alerts_after(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """A tick crossing a rule: an ``alert`` frame without ``id:``; a reconnect with the
    last price id and ``alerts_after`` gets exactly the missed alerts, in order."""
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    rule = await make_rule(client)
    async with client.get(STREAM, params={"pairs": "BTC-USD"}) as resp:
        await frames(resp, 1)  # the opening: hello and retry, no price yet
        await tick(client, "98")
        last_price = await tick(client, "101")  # crosses 100: the engine fires
        got = await sse_until(resp, 1, "alert")
        raw, (ident, _, data) = got[-1]
        assert (
            raw
            == b"event: alert\ndata: "
            + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
            + b"\n\n"
        )
        assert ident is None
        assert (data["rule_id"], data["tick_id"]) == (rule, last_price)
        assert data["data"]["pair"] == "BTC-USD" and data["data"]["price"] == "101"
        prices = [p[0] for _, p in got if p[1] == "price"]
        assert prices == ["1", str(last_price)]  # the price resume point: untouched
        first = int(data["id"])
    missed = [await fire(client, rule) for _ in range(3)]
    headers = {"Last-Event-ID": str(last_price)}
    async with client.get(
        STREAM, params={"pairs": "BTC-USD", "alerts_after": str(first)}, headers=headers
    ) as resp:
        got = await sse_until(resp, 3, "alert")
        assert alert_ids(got) == missed
        assert [p for _, p in got if p[1] == "price"] == []  # no price was missed
        live = await fire(client, rule)
        assert alert_ids(await sse_until(resp, 1, "alert")) == [live]
        later_price = await tick(client, "102")
        (raw,) = await frames(resp, 1)
        assert parse(raw)[:2] == (str(later_price), "price")


async def test_ws_alert_event_resume_and_resubscribe_keep_the_cursor(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """WS: ``{"event": "alert", "data": ...}``; ``?alerts_after`` resumes; a ``subscribe``
    op without ``alerts_after`` neither repeats nor loses an alert."""
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    rule = await make_rule(client)
    before = [await fire(client, rule) for _ in range(2)]
    async with client.ws_connect(f"/api/ws?pairs=BTC-USD&alerts_after={before[0]}") as ws:
        got = await ws_until(ws, 1, "alert")
        assert got[-1] == {"event": "alert", "data": got[-1]["data"]}
        assert got[-1]["data"]["id"] == before[1]
        assert got[-1]["data"]["data"]["test"] is True
        await ws.send_json({"op": "subscribe", "pairs": ["ETH-USD"]})
        during = await fire(client, rule)  # around the resubscribe
        await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"], "alerts_after": 0})
        after = await fire(client, rule)
        got = await ws_until(ws, 2, "alert")
        assert [m["data"]["id"] for m in got if m["event"] == "alert"] == [during, after]
        await ws.send_json({"op": "subscribe", "alerts_after": "x"})
        error = await ws.receive_json(timeout=5)
        assert error["event"] == "error" and "alerts_after" in error["data"]["detail"]
        price = await tick(client, "50")
        got = await ws_until(ws, 1, "price")
        assert [m["event"] for m in got] == ["price"] and got[0]["data"]["id"] == price


@pytest.mark.parametrize("seed", range(12))
async def test_ws_resubscribes_while_alerts_fire_lose_and_repeat_nothing(
    aiohttp_client: AiohttpClient, tmp_path: Path, seed: int
) -> None:
    """Subscribe ops (some replaying prices from the store, which holds the alerts for
    longer) interleaved at seeded points with commits and publishes of firings: the
    connection gets every firing once, in order."""
    rnd = random.Random(seed)
    cfg = config(tmp_path / "f.db")
    cfg = replace(cfg, stream=replace(cfg.stream, replay_limit=2, ws_ops_burst=100))
    client = await client_for(aiohttp_client, cfg)
    rule = await make_rule(client)
    for _ in range(6):
        await tick(client, str(rnd.randint(1, 99)))  # below the rule's level: no firing
    store, hub = client.app[ALERT_STORE], client.app[HUB]
    fired: list[int] = []
    async with client.ws_connect("/api/ws?pairs=BTC-USD") as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "price"  # registered

        async def publisher() -> None:
            for _ in range(20):
                for _ in range(rnd.randint(0, 3)):
                    await asyncio.sleep(0)
                firing = await store.test_fire("local", rule, {"test": True}, 1)
                for _ in range(rnd.randint(0, 2)):
                    await asyncio.sleep(0)  # between the commit and the publish
                hub.publish_alert("local", firing)
                fired.append(firing.id)

        async def resubscriber() -> None:
            for _ in range(10):
                for _ in range(rnd.randint(0, 4)):
                    await asyncio.sleep(0)
                pairs = rnd.choice([["BTC-USD"], ["ETH-USD"], ["BTC-USD", "ETH-USD"]])
                op: dict[str, Any] = {"op": "subscribe", "pairs": pairs}
                if rnd.random() < 0.6:
                    op["last_event_id"] = rnd.randint(0, 6)  # below the ring: the store
                await ws.send_json(op)

        await asyncio.gather(publisher(), resubscriber())
        last = await fire(client, rule)  # the end mark
        got: list[int] = []
        while not got or got[-1] < last:
            message = await ws.receive_json(timeout=5)
            assert message["event"] != "error", message
            if message["event"] == "alert":
                got.append(message["data"]["id"])
    assert got == [*fired, last]


def auth_config(tmp_path: Path, *rows: Any) -> Config:
    keys = write_keys(tmp_path / "keys.toml", *rows)
    secret = tmp_path / "session.secret"
    secret.write_bytes(b"x" * 32)
    cfg = config(tmp_path / "f.db")
    auth = {"enabled": True, "key_file": str(keys), "session_secret_file": str(secret)}
    return replace(cfg, auth=parse_config({"auth": auth}).auth)


async def test_with_auth_each_owner_gets_only_its_alerts_and_scope_is_needed(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Alice's stream gets Alice's firings, Bob's WebSocket Bob's; a key without the
    ``alerts`` scope gets none, its ``alerts_after`` ignored."""
    alice, alice_row = make_key("pairs:* alerts")
    bob, bob_row = make_key("pairs:* alerts")
    reader, reader_row = make_key("pairs:*")
    client = await client_for(aiohttp_client, auth_config(tmp_path, alice_row, bob_row, reader_row))
    alice_rule = await make_rule(client, bearer(alice))
    bob_rule = await make_rule(client, bearer(bob))
    earlier = await fire(client, alice_rule, bearer(alice))
    async with asyncio.timeout(5):  # published by the fan-out (it reads the store)
        while client.app[HUB].alert_latest != earlier:
            await asyncio.sleep(0.01)
    sse = {"pairs": "BTC-USD"}
    async with (
        client.get(STREAM, params=sse, headers=bearer(alice)) as mine,
        client.get(STREAM, params={**sse, "alerts_after": "0"}, headers=bearer(reader)) as theirs,
        client.ws_connect("/api/ws?pairs=BTC-USD", headers=bearer(bob)) as bobs,
    ):
        for resp in (mine, theirs):
            await frames(resp, 1)  # the opening (the pair's status)
        # Alice's stream (it has the scope) is told its resume point: firings up to the
        # latest one existed before it opened. Bob's too (ids are global); the reader's not.
        (position,) = await frames(mine, 1)
        assert parse(position)[1:] == ("alerts", {"after": earlier})
        assert (await bobs.receive_json(timeout=5))["event"] == "status"
        assert await bobs.receive_json(timeout=5) == {"event": "alerts", "data": {"after": earlier}}
        hub = client.app[HUB]
        owners = sorted(str(s.owner) for s in hub.subscribers())
        assert owners == sorted([alice_row.id, bob_row.id, "None"])
        a = await fire(client, alice_rule, bearer(alice))
        b = await fire(client, bob_rule, bearer(bob))
        price = await tick(client, "50")  # a barrier: every stream gets it after the alerts
        got = await sse_until(mine, 1, "price")
        assert [p[1] for _, p in got] == ["alert", "price"] and alert_ids(got) == [a]
        got = await sse_until(theirs, 1, "price")
        assert [p[:2] for _, p in got] == [(str(price), "price")]
        messages = await ws_until(bobs, 1, "price")
        assert [(m["event"], m["data"].get("id")) for m in messages] == [
            ("alert", b),
            ("price", price),
        ]
    async with client.get(STREAM, params={**sse, "alerts_after": "0"}, headers=bearer(alice)) as r:
        assert alert_ids(await sse_until(r, 2, "alert")) == [earlier, a]


async def test_alerts_off_the_parameter_is_accepted_and_ignored(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    cfg = config(tmp_path / "f.db")
    client = await client_for(
        aiohttp_client, replace(cfg, alerts=replace(cfg.alerts, enabled=False))
    )
    async with client.get(STREAM, params={"alerts_after": "7"}) as resp:
        assert resp.status == 200
        await frames(resp, 1)
        (sub,) = client.app[HUB].subscribers()
        assert sub.owner is None
        price = await tick(client, "1")
        got = await sse_until(resp, 1, "price")
        assert [p[1] for _, p in got] == ["status", "price"] and got[-1][1][0] == str(price)
    async with client.ws_connect("/api/ws?alerts_after=7") as ws:
        await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"], "alerts_after": 3})
        assert (await ws.receive_json(timeout=5))["event"] == "price"


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "²", "1" * 19, " "])
async def test_bad_alerts_after_is_400_naming_the_field(
    aiohttp_client: AiohttpClient, tmp_path: Path, bad: str
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    for path in (STREAM, "/api/ws"):
        resp = await client.get(path, params={"alerts_after": bad})
        assert resp.status == 400, (path, bad)
        assert resp.headers["Content-Type"] == "application/problem+json"
        problem = await resp.json()
        assert problem["field"] == "alerts_after" and "alerts_after" in problem["detail"]
    assert client.app[HUB].count == 0


async def test_shutdown_unsets_the_alert_source(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """After the alerts context ends no resume reads a store that is closing."""
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    hub = client.app[HUB]
    assert hub.alert_source is not None
    await client.close()
    await asyncio.sleep(0)
    assert hub.alert_source is None
