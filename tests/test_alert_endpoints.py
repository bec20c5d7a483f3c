"""The webhook endpoints REST API: secret shown once, SSRF URL rules, rotation, test."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient, AiohttpServer
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks import Webhook, WebhookVerificationError

from bittrade_feed.alerts.spec import Invalid, from_stored, parse_rule, rule_body, to_stored
from bittrade_feed.config import Config
from bittrade_feed.server.alerts import ALERT_STORE
from tests.fakeclock import FakeClock
from tests.test_alerts_api import RULES, as_header, config
from tests.test_alerts_api import client_for as api_client

HOOKS = "/api/alerts/webhooks"
LOOPBACK = {"webhook_allow_http": True, "webhook_allow": ["127.0.0.1/32"]}


async def client_for(
    aiohttp_client: AiohttpClient, cfg: Config, clock: FakeClock | None = None
) -> TestClient[web.Request, web.Application]:
    return await api_client(aiohttp_client, cfg, [as_header], clock)


async def test_create_shows_the_secret_once_list_never(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    resp = await client.post(HOOKS, json={"url": "https://hooks.example.com/a"})
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["secret"].startswith("whsec_")
    assert resp.headers["Location"] == f"{HOOKS}/{made['id']}"
    text = await (await client.get(HOOKS)).text()
    assert made["secret"] not in text
    listed = await (await client.get(HOOKS)).json()
    assert listed["webhooks"] == [
        {
            "id": made["id"],
            "url": "https://hooks.example.com/a",
            "format": "standard",
            "created": made["created"],
            "disabled": None,
            "old_secret_until": None,
        }
    ]
    assert (await client.delete(f"{HOOKS}/{made['id']}")).status == 204
    assert (await (await client.get(HOOKS)).json())["webhooks"] == []
    again = await client.delete(f"{HOOKS}/{made['id']}")
    assert again.status == 404
    assert again.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ("[]", 400, "body"),
        ("nope", 400, "body"),
        ("{}", 422, "url"),
        ('{"url": 5}', 422, "url"),
        ('{"url": "https://x.example", "secret": "mine"}', 422, "secret"),
        ('{"url": "http://hooks.example.com/"}', 422, "url"),
        ('{"url": "https://user:pw@hooks.example.com/"}', 422, "url"),
        ('{"url": "https://127.0.0.1/"}', 422, "url"),
        ('{"url": "https://[::ffff:127.0.0.1]/"}', 422, "url"),
        ('{"url": "https://2130706433/"}', 422, "url"),
        ('{"url": "https://169.254.169.254/latest"}', 422, "url"),
        ('{"url": "ftp://hooks.example.com/"}', 422, "url"),
        ('{"url": "https://' + "a" * 2100 + '.example"}', 422, "url"),
    ],
)
async def test_bad_bodies_name_the_field(
    aiohttp_client: AiohttpClient, tmp_path: Path, body: str, status: int, field: str
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    resp = await client.post(HOOKS, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["field"] == field


async def test_quota_holds_under_concurrent_creates(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db", max_endpoints_per_owner=2))
    answers = await asyncio.gather(
        *(client.post(HOOKS, json={"url": f"https://h{i}.example.com/"}) for i in range(5))
    )
    assert sorted(a.status for a in answers) == [201, 201, 409, 409, 409]


async def test_endpoints_are_per_owner(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    alice, bob = {"X-Test-Subject": "alice"}, {"X-Test-Subject": "bob"}
    made = await (
        await client.post(HOOKS, json={"url": "https://a.example.com/"}, headers=alice)
    ).json()
    assert (await (await client.get(HOOKS, headers=bob)).json())["webhooks"] == []
    for path in (f"{HOOKS}/{made['id']}/rotate", f"{HOOKS}/{made['id']}/test"):
        assert (await client.post(path, headers=bob)).status == 404
    assert (await client.delete(f"{HOOKS}/{made['id']}", headers=bob)).status == 404
    assert (await client.get(HOOKS, headers={**alice, "X-Test-Alerts": "0"})).status == 403


class Receiver:
    """A local webhook receiver that keeps what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((await request.read(), dict(request.headers)))
        return web.Response(status=self.status)


async def serve(aiohttp_server: AiohttpServer, status: int = 200) -> tuple[Receiver, TestServer]:
    """A receiver answering ``status`` at ``/hook`` on 127.0.0.1."""
    receiver = Receiver()
    receiver.status = status
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    return receiver, await aiohttp_server(app, host="127.0.0.1")


async def test_rotation_signs_with_both_secrets_for_the_overlap(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    receiver, server = await serve(aiohttp_server)
    # Receivers refuse timestamps 5 minutes off: both sends stay within that of now.
    clock = FakeClock(time.time() - 200)
    cfg = config(tmp_path / "f.db", rotation_overlap=300, **LOOPBACK)
    client = await client_for(aiohttp_client, cfg, clock)
    made = await (await client.post(HOOKS, json={"url": str(server.make_url("/hook"))})).json()
    rotated = await client.post(f"{HOOKS}/{made['id']}/rotate")
    assert rotated.status == 200
    new = (await rotated.json())["secret"]
    assert new != made["secret"]
    assert (await rotated.json())["old_secret_until"] is not None

    answer = await (await client.post(f"{HOOKS}/{made['id']}/test")).json()
    assert answer["delivered"] is True and answer["status"] == 200
    body, headers = receiver.got[-1]
    assert headers["webhook-id"] == answer["webhook_id"]
    for secret in (made["secret"], new):
        assert Webhook(secret).verify(body, headers)["type"] == "alert.test"

    clock.jump(301)  # the overlap is over: only the new secret signs
    await client.post(f"{HOOKS}/{made['id']}/test")
    body, headers = receiver.got[-1]
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(made["secret"]).verify(body, headers)
    listed = await (await client.get(HOOKS)).json()
    assert listed["webhooks"][0]["old_secret_until"] is None


async def test_test_reports_a_failing_receiver(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    receiver, server = await serve(aiohttp_server, 500)
    client = await client_for(aiohttp_client, config(tmp_path / "f.db", **LOOPBACK))
    made = await (await client.post(HOOKS, json={"url": str(server.make_url("/hook"))})).json()
    answer = await (await client.post(f"{HOOKS}/{made['id']}/test")).json()
    assert answer["delivered"] is False
    assert answer["status"] == 500
    assert answer["error"] == "HTTP 500"
    assert len(receiver.got) == 1


@pytest.mark.parametrize(
    ("webhooks", "field"),
    [
        ("ep_0123456789abcdef", "webhooks"),
        (["nope"], "webhooks[0]"),
        ([7], "webhooks[0]"),
        (["ep_0123456789abcdef", "ep_0123456789abcdef"], "webhooks[1]"),
        ([f"ep_{i:016x}" for i in range(11)], "webhooks"),
    ],
)
def test_rule_webhooks_are_validated(webhooks: object, field: str) -> None:
    body = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": webhooks}
    with pytest.raises(Invalid) as caught:
        parse_rule(body)
    assert caught.value.field == field


def test_rule_webhooks_round_trip_and_are_absent_when_empty() -> None:
    ids = ["ep_0123456789abcdef", "ep_fedcba9876543210"]
    rule = parse_rule({"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": ids})
    assert rule.webhooks == tuple(ids)
    assert rule_body(rule)["webhooks"] == ids
    assert from_stored(to_stored(rule)) == rule
    plain_rule = parse_rule({"pair": "BTC-USD", "kind": "above", "level": "1"})
    assert "webhooks" not in rule_body(plain_rule)


async def test_a_firing_queues_one_row_per_live_endpoint_of_the_rule(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    alice, bob = {"X-Test-Subject": "alice"}, {"X-Test-Subject": "bob"}
    a1, a2 = [
        (await (await client.post(HOOKS, json={"url": u}, headers=alice)).json())["id"]
        for u in ("https://a1.example.com/", "https://a2.example.com/")
    ]
    b1 = (
        await (await client.post(HOOKS, json={"url": "https://b.example.com/"}, headers=bob)).json()
    )["id"]
    rule = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": [a1, b1]}
    refused = await client.post(RULES, json=rule, headers=alice)
    assert refused.status == 422
    assert (await refused.json())["field"] == "webhooks[1]"

    made = await client.post(RULES, json={**rule, "webhooks": [a1, a2]}, headers=alice)
    assert made.status == 201
    shown = await made.json()
    assert shown["webhooks"] == [a1, a2]
    assert (await client.delete(f"{HOOKS}/{a2}", headers=alice)).status == 204
    fired = await client.post(f"{RULES}/{shown['id']}/test", headers=alice)
    assert fired.status == 201
    firing = (await fired.json())["id"]
    outbox = await client.app[ALERT_STORE].outbox()
    assert sorted((row[0], row[2]) for row in outbox) == [
        (f"alert_{firing}_webhook_{a1}", "webhook"),
    ]


async def test_the_daemon_delivers_a_firing_to_the_rules_endpoint(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    receiver, server = await serve(aiohttp_server)
    cfg = config(tmp_path / "f.db", **LOOPBACK)
    client = await client_for(aiohttp_client, cfg, FakeClock(time.time()))
    made = await (await client.post(HOOKS, json={"url": str(server.make_url("/hook"))})).json()
    rule = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": [made["id"]]}
    rule_id = (await (await client.post(RULES, json=rule)).json())["id"]
    firing = (await (await client.post(f"{RULES}/{rule_id}/test")).json())["id"]
    for _ in range(100):  # a test firing wakes the worker: well under 2 s
        if receiver.got:
            break
        await asyncio.sleep(0.02)
    body, headers = receiver.got[0]
    assert headers["webhook-id"] == f"alert_{firing}_webhook_{made['id']}"
    assert Webhook(made["secret"]).verify(body, headers)["data"]["test"] is True


async def test_an_alertmanager_endpoint_gets_alertmanager_json_signed_the_same_way(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """``"format": "alertmanager"``: the firing as Alertmanager's webhook JSON (version 4),
    with the same Standard Webhooks headers; a bad format is a 422 naming the field."""
    receiver, server = await serve(aiohttp_server)
    cfg = config(tmp_path / "f.db", **LOOPBACK)
    client = await client_for(aiohttp_client, cfg, FakeClock(time.time()))
    url = str(server.make_url("/hook"))
    bad = await client.post(HOOKS, json={"url": url, "format": "slack"})
    assert bad.status == 422 and (await bad.json())["field"] == "format"
    made = await (await client.post(HOOKS, json={"url": url, "format": "alertmanager"})).json()
    assert made["format"] == "alertmanager"
    listed = (await (await client.get(HOOKS)).json())["webhooks"]
    assert [w["format"] for w in listed] == ["alertmanager"]
    rule = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": [made["id"]]}
    rule_id = (await (await client.post(RULES, json=rule)).json())["id"]
    firing = (await (await client.post(f"{RULES}/{rule_id}/test")).json())["id"]
    for _ in range(100):
        if receiver.got:
            break
        await asyncio.sleep(0.02)
    body, headers = receiver.got[0]
    assert headers["webhook-id"] == f"alert_{firing}_webhook_{made['id']}"
    doc = Webhook(made["secret"]).verify(body, headers)  # the signature covers this body
    assert (doc["version"], doc["status"], doc["receiver"]) == ("4", "firing", "bittrade-feed")
    (alert,) = doc["alerts"]
    assert alert["labels"] == {
        "alertname": "BittradeFeedPriceAlert",
        "pair": "BTC-USD",
        "kind": "above",
    }
    assert alert["annotations"]["summary"] == f"test firing of alert rule {rule_id}"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["status"] == "firing"
    assert doc["commonLabels"] == alert["labels"] and doc["truncatedAlerts"] == 0
    tested = await (await client.post(f"{HOOKS}/{made['id']}/test")).json()
    assert tested["delivered"] is True
    body, headers = receiver.got[-1]
    (alert,) = Webhook(made["secret"]).verify(body, headers)["alerts"]
    assert alert["labels"]["alertname"] == "BittradeFeedTest"


async def test_failed_deliveries_are_listed_and_retried_once(
    aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    receiver, server = await serve(aiohttp_server, 500)
    cfg = config(tmp_path / "f.db", max_attempts=1, **LOOPBACK)
    client = await client_for(aiohttp_client, cfg, FakeClock(time.time()))
    made = await (await client.post(HOOKS, json={"url": str(server.make_url("/hook"))})).json()
    rule = {"pair": "BTC-USD", "kind": "above", "level": "1", "webhooks": [made["id"]]}
    rule_id = (await (await client.post(RULES, json=rule)).json())["id"]
    firing = (await (await client.post(f"{RULES}/{rule_id}/test")).json())["id"]
    delivery = f"alert_{firing}_webhook_{made['id']}"

    async def failed() -> list[dict[str, Any]]:
        answer = await client.get("/api/alerts/deliveries")
        assert answer.status == 200
        listed: list[dict[str, Any]] = (await answer.json())["deliveries"]
        return listed

    for _ in range(200):
        if await failed():
            break
        await asyncio.sleep(0.02)
    (shown,) = await failed()
    assert shown["id"] == delivery and shown["attempts"] == 1
    assert shown["last_error"].endswith("HTTP 500")
    bob = {"X-Test-Subject": "bob"}
    of_bob = await (await client.get("/api/alerts/deliveries", headers=bob)).json()
    assert of_bob == {"deliveries": []}
    retry = f"/api/alerts/deliveries/{delivery}/retry"
    assert (await client.post(retry, headers=bob)).status == 404
    assert (await client.post("/api/alerts/deliveries/nope/retry")).status == 404

    receiver.status = 200
    answers = await asyncio.gather(client.post(retry), client.post(retry))
    assert sorted(a.status for a in answers) == [202, 409]
    for _ in range(200):
        if len(receiver.got) == 2:
            break
        await asyncio.sleep(0.02)
    assert [h["webhook-id"] for _, h in receiver.got] == [delivery, delivery]
    assert await failed() == []
    for _ in range(200):  # delivered: a retry is refused
        again = await client.post(retry)
        if again.status == 409:
            break
        await asyncio.sleep(0.02)
    assert again.status == 409 and again.content_type == "application/problem+json"
