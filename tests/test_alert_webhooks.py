"""Webhook signing (Standard Webhooks) and the SSRF guard, against local receivers only."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from bittrade_feed.alerts.ssrf import Policy, Refused, check_address, check_url, guarded_session
from bittrade_feed.alerts.webhook import (
    body_for,
    message,
    new_secret,
    retry_after,
    send,
    signed_headers,
)

LOOPBACK = Policy.of(allow_http=True, allow=["127.0.0.1/32", "::1/128"])
OPEN_HTTP = Policy.of(allow_http=True)
"""Plain http allowed (so the scheme is not what refuses), no allow-list."""


# -- signing -------------------------------------------------------------------------------


def test_signature_verifies_with_the_package_verifier() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = message("alert.fired", {"rule_id": 1, "price": "101"}, time.time())
    headers = signed_headers("alert_1_webhook_e1", body, [secret], time.time())
    assert Webhook(secret).verify(body, headers)["data"]["price"] == "101"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_rotation_signs_with_both_secrets() -> None:
    old, new = new_secret(), new_secret()
    body = message("alert.fired", {}, time.time())
    headers = signed_headers("m1", body, [new, old], time.time())
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    with pytest.raises(ValueError, match="at least one secret"):
        signed_headers("m1", body, [], time.time())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), ("999999999", 86_400.0), ("soon", None), (None, None), ("-1", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after(header, 1000.0) == expected


def test_retry_after_date() -> None:
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0


# -- address and URL checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "169.254.169.254",
        "fe80::1",
        "fd00::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(Refused):
        check_address(ipaddress.ip_address(address), Policy())


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), Policy())


def test_the_allow_list_admits_what_it_names_only() -> None:
    check_address(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    with pytest.raises(Refused):
        check_address(ipaddress.ip_address("127.0.0.2"), LOOPBACK)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_mapped_address_never_passes_where_ipv4_is_refused(n: int) -> None:
    """``::ffff:a.b.c.d`` and ``::a.b.c.d`` get exactly the verdict of ``a.b.c.d``."""
    v4 = ipaddress.IPv4Address(n)

    def verdict(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        try:
            check_address(address, Policy())
        except Refused:
            return False
        return True

    expected = verdict(v4)
    assert verdict(ipaddress.IPv6Address(f"::ffff:{v4}")) == expected
    if n > 1:
        assert verdict(ipaddress.IPv6Address(int(v4))) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "must be an https URL"),
        ("ftp://example.com/", "must be an https URL"),
        ("https://user:pw@example.com/", "user name or password"),
        ("https://user@example.com/", "user name or password"),
        ("https:///path", "names no host"),
        ("https://127.0.0.1/", "not a public address"),
        ("https://[::1]/", "not a public address"),
        ("https://[::ffff:127.0.0.1]/", "not a public address"),
        ("https://2130706433/", "not a public address"),
        ("https://0x7f.1/", "not a public address"),
        ("https://127.1/", "not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "not a public address"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_url(url, Policy())


def test_check_url_passes_public_https() -> None:
    assert check_url("https://hooks.example.com/a?b=1", Policy()).host == "hooks.example.com"


# -- deliveries to local receivers -----------------------------------------------------------


class Receiver:
    """A local webhook receiver: answers with the queued statuses, verifies signatures."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.statuses: list[int] = []
        self.headers: dict[str, str] = {}
        self.received: list[dict[str, Any]] = []
        self.redirect_to = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Webhook(self.secret).verify(body, dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        if self.redirect_to:
            return web.Response(status=302, headers={"Location": self.redirect_to})
        return web.Response(status=status, headers=self.headers, text="x" * 200_000)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[Receiver, TestServer]:
    made = Receiver(new_secret())
    server = await aiohttp_server(made.app(), host="127.0.0.1")
    return made, server


async def deliver(policy: Policy, url: str, secret: str, msg_id: str = "alert_1_webhook_e1") -> Any:
    body = message("alert.fired", {"rule_id": 1}, time.time())
    headers = signed_headers(msg_id, body, [secret], time.time())
    async with guarded_session(policy, timeout=5.0, user_agent="test") as session:
        return await send(session, policy, url, body, headers, now=time.time())


async def test_500_then_200_with_the_same_id(receiver: tuple[Receiver, TestServer]) -> None:
    made, server = receiver
    made.statuses = [500]
    url = str(server.make_url("/hook"))
    first = await deliver(LOOPBACK, url, made.secret)
    assert (first.delivered, first.status, first.refused) == (False, 500, False)
    second = await deliver(LOOPBACK, url, made.secret)
    assert second.delivered
    assert len(made.received) == 2  # both verified by the package's verifier


async def test_410_says_gone_and_429_says_when(receiver: tuple[Receiver, TestServer]) -> None:
    made, server = receiver
    url = str(server.make_url("/hook"))
    made.statuses = [410]
    assert (await deliver(LOOPBACK, url, made.secret)).gone
    made.statuses, made.headers = [429], {"Retry-After": "7"}
    slow = await deliver(LOOPBACK, url, made.secret)
    assert (slow.delivered, slow.retry_after) == (False, 7.0)


async def test_a_redirect_is_not_followed(
    receiver: tuple[Receiver, TestServer], aiohttp_server: AiohttpServer
) -> None:
    made, server = receiver
    target = Receiver(made.secret)
    inner = await aiohttp_server(target.app(), host="127.0.0.1")
    made.redirect_to = str(inner.make_url("/hook"))
    outcome = await deliver(LOOPBACK, str(server.make_url("/hook")), made.secret)
    assert (outcome.delivered, outcome.status) == (False, 302)
    assert "redirects are not followed" in outcome.error
    assert target.received == []


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "169.254.169.254", "localhost"],
)
async def test_loopback_in_every_spelling_is_refused_without_the_allow_list(
    receiver: tuple[Receiver, TestServer], host: str
) -> None:
    made, server = receiver
    port = server.port
    outcome = await deliver(OPEN_HTTP, f"http://{host}:{port}/hook", made.secret)
    assert outcome.refused, outcome
    assert not outcome.delivered
    assert made.received == []


async def test_a_name_is_checked_at_connect_time(receiver: tuple[Receiver, TestServer]) -> None:
    """``localhost`` passes the URL check (a name) and is refused by the resolver."""
    made, server = receiver
    check_url(f"http://localhost:{server.port}/hook", OPEN_HTTP)
    allowed = await deliver(LOOPBACK, f"http://localhost:{server.port}/hook", made.secret)
    assert allowed.delivered, allowed
    refused = await deliver(OPEN_HTTP, f"http://localhost:{server.port}/hook", made.secret)
    assert refused.refused
    assert "localhost resolves to" in refused.error
    assert len(made.received) == 1


def test_message_is_the_spec_payload() -> None:
    body = json.loads(message("alert.fired", {"a": 1}, 0.0))
    assert body == {"type": "alert.fired", "timestamp": "1970-01-01T00:00:00Z", "data": {"a": 1}}


async def test_unreachable_is_an_error_not_a_raise() -> None:
    outcome = await deliver(LOOPBACK, "http://127.0.0.1:1/hook", new_secret())
    assert not outcome.delivered
    assert not outcome.refused
    assert outcome.error
    assert isinstance(outcome.error, str)


def test_the_alertmanager_body_is_one_firing_alert_with_a_stable_fingerprint() -> None:
    """Alertmanager's webhook JSON (version 4): a group of one ``firing`` alert whose
    labels and annotations come from the firing; a retry (same id) has the same body."""
    data = {
        "tick_id": 1842,
        "pair": "BTC-USD",
        "price": "70012.5",
        "ts": "2026-11-23T20:31:00.123Z",
        "kind": "crosses_up",
        "direction": "up",
        "detail": "BTC-USD 70012.5 crossed above 70000",
        "count": 1,
        "simulated": False,
    }
    body = body_for("alertmanager", "alert.fired", data, 1_764_000_000.0, "alert_7_webhook_ep_1")
    assert body == body_for(
        "alertmanager", "alert.fired", data, 1_764_000_000.0, "alert_7_webhook_ep_1"
    )
    doc = json.loads(body)
    labels = {
        "alertname": "BittradeFeedPriceAlert",
        "pair": "BTC-USD",
        "kind": "crosses_up",
        "direction": "up",
    }
    (alert,) = doc["alerts"]
    assert alert["labels"] == labels == doc["commonLabels"]
    assert alert["annotations"] == {
        "summary": "BTC-USD 70012.5 crossed above 70000",
        "price": "70012.5",
        "tick_id": "1842",
    }
    assert alert["startsAt"] == data["ts"] and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(alert["fingerprint"]) == 16
    other = json.loads(body_for("alertmanager", "alert.fired", data, 1.0, "alert_8_webhook_ep_1"))
    assert other["alerts"][0]["fingerprint"] != alert["fingerprint"]
    assert doc["groupKey"] == (
        '{}:{alertname="BittradeFeedPriceAlert", direction="up", kind="crosses_up", pair="BTC-USD"}'
    )
    assert (doc["version"], doc["status"], doc["truncatedAlerts"]) == ("4", "firing", 0)
    assert body_for("standard", "alert.fired", data, 1.0, "x") == message("alert.fired", data, 1.0)
