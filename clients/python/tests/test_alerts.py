"""Alerts: ``feed.alerts()`` over the price stream, and ``AlertsAPI``, against the real
daemon (alerts on) and, for what the daemon never sends (a repeated id), a scripted one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from aiohttp.test_utils import unused_port
from bittrade_feed_client import (
    Alert,
    AlertsAPI,
    AuthError,
    FeedClient,
    ForbiddenError,
    RequestRejected,
    ServiceError,
)
from bittrade_feed_client.inbox import AlertInbox
from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.auth.keys import KeyStore, new_key, write_key_file
from bittrade_feed.auth.scopes import parse_scopes
from bittrade_feed.server.alerts import ALERT_STORE
from bittrade_feed.server.state import HUB
from tests.daemon import PAIR

WAIT = 5.0
"""Upper bound for anything that should happen at once; tests finish long before."""
ALERTS_ON = {"enabled": True, "webhook_allow_http": True, "webhook_allow": ["127.0.0.1/32"]}


def crossing(level: str) -> dict[str, Any]:
    """A rule body: the pair's price crossing ``level`` upwards."""
    return {"pair": PAIR, "kind": "crosses_up", "level": level, "hysteresis": "1"}


async def next_alert(alerts: AsyncIterator[Alert]) -> Alert:
    """The next alert (or fail after ``WAIT``)."""
    async with asyncio.timeout(WAIT):
        return await anext(alerts)


async def until(check: Callable[[], Awaitable[object]]) -> None:
    """Poll the async ``check`` until it is truthy (failing after ``WAIT``)."""
    async with asyncio.timeout(WAIT):
        while not await check():  # noqa: ASYNC110 - polling: the daemon has no notification
            await asyncio.sleep(0.01)


def has_price(feed: FeedClient, price: str | None = None) -> Callable[[], Awaitable[bool]]:
    """A check: ``feed`` has a price of the pair (``price``, if given)."""

    async def check() -> bool:
        tick = feed.latest(PAIR)
        return tick is not None and (price is None or tick.price == Decimal(price))

    return check


async def test_alerts_come_over_the_stream_and_resume_across_a_restart(daemon_factory) -> None:
    """A crossing arrives typed; one fired while the daemon was unreachable arrives after
    the reconnect (``alerts_after``); a test firing follows; each id once."""
    daemon = await daemon_factory(alerts=ALERTS_ON)
    async with AlertsAPI(daemon.url) as api, FeedClient(daemon.url, max_delay=0.3) as feed:
        low = await api.create_rule(crossing("73400"))
        high = await api.create_rule(crossing("73600"))
        await daemon.tick("73300")  # below both: the rules' first price
        await until(has_price(feed))  # connected
        alerts = feed.alerts()
        price_id = await daemon.tick("73500")
        alert = await next_alert(alerts)
        assert (alert.rule_id, alert.tick_id, alert.pair) == (low.id, price_id, PAIR)
        assert alert.price == Decimal("73500")
        assert alert.kind == "crosses_up"
        assert alert.at.tzinfo is not None
        assert alert.at.utcoffset() == UTC.utcoffset(None)
        assert alert.detail
        assert not alert.test
        assert not alert.simulated
        assert feed.last_alert_id == alert.id

        await daemon.stop()
        await daemon.open()  # serving nothing yet: the client keeps failing to connect
        await daemon.tick("73700")
        store = daemon.app[ALERT_STORE]
        await until(lambda: store.firings("local", high.id, 10))
        await daemon.listen()
        missed = await next_alert(alerts)
        assert (missed.rule_id, missed.price) == (high.id, Decimal("73700"))
        assert missed.id > alert.id

        fired = await api.test_rule(low.id)
        live = await next_alert(alerts)
        assert live == fired
        assert live.test
        assert live.price is None
        assert live.tick_id is None
        assert feed.last_alert_id == live.id
    assert [a async for a in alerts] == []  # closed with the feed, nothing else queued


async def test_an_alert_fired_before_the_first_one_arrived_is_not_missed(
    daemon_factory,
) -> None:
    """The opening's ``alerts`` event gives the client a resume point before any alert: one
    that fires while it is away, before it ever got an alert, arrives after the reconnect;
    one that fired before it first connected does not."""
    daemon = await daemon_factory(alerts=ALERTS_ON)
    async with AlertsAPI(daemon.url) as api:
        rule = await api.create_rule(crossing("73600"))
        earlier = await api.test_rule(rule.id)  # before the client: not its business
        hub = daemon.app[HUB]

        async def published() -> bool:  # by the fan-out, which reads it back from the store
            return hub.alert_latest == earlier.id

        await until(published)
        async with FeedClient(daemon.url, max_delay=0.3) as feed:
            await daemon.tick("73300")  # below the level: the rule's first price
            await until(has_price(feed))
            assert feed.last_alert_id == earlier.id  # the position, with no alert yet
            alerts = feed.alerts()
            await daemon.stop()
            await daemon.open()
            await daemon.tick("73700")
            store = daemon.app[ALERT_STORE]
            await until(lambda: store.firings_after("local", earlier.id, 10))
            await daemon.listen()
            missed = await next_alert(alerts)
            assert (missed.rule_id, missed.price) == (rule.id, Decimal("73700"))
            assert missed.id > earlier.id


def alert_frame(ident: int) -> bytes:
    """One ``alert`` event as the daemon frames it (no ``id:`` line)."""
    data = {
        "id": ident,
        "rule_id": 1,
        "tick_id": None,
        "at": "2026-11-23T20:31:00.000Z",
        "data": {"test": True, "pair": PAIR, "kind": "above", "detail": "test"},
    }
    return f"event: alert\ndata: {json.dumps(data)}\n\n".encode()


async def test_repeated_alert_ids_are_dropped_and_reconnects_send_the_highest(
    scripted,
) -> None:
    """At least once from the daemon, once to the caller: ids at or below the highest seen
    are dropped, and each reconnect asks for ``alerts_after`` that id."""
    queries: list[dict[str, str]] = []

    def recorded(handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            queries.append(dict(request.query))
            return await handler(request)

        return handle

    first = scripted.stream(b"".join(alert_frame(i) for i in (5, 5, 3, 7)) + b"retry: 10\n\n")
    second = scripted.stream(alert_frame(7) + alert_frame(9), hold=1)
    script = await scripted.start(recorded(first), recorded(second))
    async with FeedClient(script.url, alerts_after=2, reconnect_delay=0.01) as feed:
        alerts = feed.alerts()
        got = [(await next_alert(alerts)).id for _ in range(3)]
    assert got == [5, 7, 9]
    assert [q.get("alerts_after") for q in queries] == ["2", "7"]


async def test_rule_helpers_round_trip_and_errors_name_the_field(daemon_factory) -> None:
    """Create, get, update with If-Match, list, test, firings, delete; each refusal is
    ``RequestRejected`` with the daemon's status, detail and field."""
    daemon = await daemon_factory(alerts=ALERTS_ON)
    async with AlertsAPI(daemon.url + "/api/price-stream") as api:
        made = await api.create_rule(crossing("80000"))
        assert made.etag
        assert made.pair == PAIR
        assert made.kind == "crosses_up"
        assert (made.fired, made.done, made.last_fired) == (0, False, None)
        got = await api.get_rule(made.id)
        assert got.etag == made.etag
        assert got.definition == made.definition
        changed = await api.update_rule(
            made.id, {**made.definition, "level": "81000"}, etag=made.etag
        )
        assert changed.definition["level"] == "81000"
        assert changed.version == made.version + 1
        with pytest.raises(RequestRejected) as stale:
            await api.update_rule(made.id, made.definition, etag=made.etag)
        assert (stale.value.status, stale.value.field) == (412, "If-Match")
        with pytest.raises(RequestRejected) as bad:
            await api.create_rule({**crossing("80000"), "level": "-1"})
        assert (bad.value.status, bad.value.field) == (422, "level")
        assert "level" in bad.value.detail
        assert [r.id for r in await api.list_rules()] == [made.id]

        fired = await api.test_rule(made.id)
        assert fired.test
        assert fired.rule_id == made.id
        assert await api.rule_firings(made.id) == [fired]
        await api.delete_rule(made.id, etag=changed.etag)
        with pytest.raises(RequestRejected) as deleted:
            await api.get_rule(made.id)
        assert deleted.value.status == 404


async def test_webhook_and_delivery_helpers_round_trip(
    daemon_factory, aiohttp_server: AiohttpServer
) -> None:
    """Create (secret once), list, a signed test delivery, rotate, delete; deliveries."""
    received: list[dict[str, str]] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=200)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver)
    hook = await aiohttp_server(hook_app)
    daemon = await daemon_factory(alerts=ALERTS_ON)
    async with AlertsAPI(daemon.url) as api:
        webhook = await api.create_webhook(str(hook.make_url("/hook")))
        assert webhook.secret is not None
        assert webhook.secret.startswith("whsec_")
        (listed,) = await api.list_webhooks()
        assert listed.id == webhook.id
        assert listed.secret is None
        assert listed.disabled is None
        outcome = await api.test_webhook(webhook.id)
        assert (outcome.delivered, outcome.status, outcome.error) == (True, 200, None)
        assert received[-1]["webhook-id"] == outcome.webhook_id
        rotated = await api.rotate_webhook(webhook.id)
        assert rotated.secret not in (None, webhook.secret)
        assert rotated.old_secret_until is not None
        await api.delete_webhook(webhook.id)
        assert await api.list_webhooks() == []
        other = await api.create_webhook(str(hook.make_url("/hook")), body_format="alertmanager")
        assert (other.format, webhook.format) == ("alertmanager", "standard")
        assert [w.format for w in await api.list_webhooks()] == ["alertmanager"]
        with pytest.raises(RequestRejected) as gone:
            await api.delete_webhook(webhook.id)
        assert gone.value.status == 404
        assert gone.value.field is None

        assert await api.list_deliveries() == []
        with pytest.raises(RequestRejected) as unknown:
            await api.retry_delivery("alert_1_webhook_nope")
        assert unknown.value.status == 404
        with pytest.raises(ValueError, match="not an id"):
            await api.retry_delivery("..")


def key(scope: str) -> tuple[str, Any]:
    """A new API key (shown once) and its key-file row."""
    return new_key(KeyStore(), parse_scopes(scope), None, "client test", time.time())


async def test_with_auth_the_key_is_sent_and_refusals_are_named(
    daemon_factory, tmp_path: Path
) -> None:
    """No key: AuthError; a key without ``alerts``: ForbiddenError, and its stream gets no
    alerts; the owner's key manages its rules and its stream gets their firings."""
    owner, owner_row = key("pairs:* alerts")
    reader, reader_row = key("pairs:*")
    keys = tmp_path / "keys.toml"
    write_key_file(keys, [owner_row, reader_row])
    daemon = await daemon_factory(alerts=ALERTS_ON, auth={"enabled": True, "key_file": str(keys)})
    await daemon.tick("73300")
    async with AlertsAPI(daemon.url) as anonymous:
        with pytest.raises(AuthError) as no_key:
            await anonymous.list_rules()
        assert no_key.value.status == 401
        assert no_key.value.detail
    async with AlertsAPI(daemon.url, api_key=reader) as unscoped:
        with pytest.raises(ForbiddenError) as refused:
            await unscoped.list_rules()
        assert "alerts" in refused.value.detail
    async with (
        AlertsAPI(daemon.url, api_key=owner) as api,
        FeedClient(daemon.url, api_key=owner) as mine,
        FeedClient(daemon.url, api_key=reader) as theirs,
    ):
        rule = await api.create_rule(crossing("90000"))
        for feed in (mine, theirs):
            await until(has_price(feed))
        fired = await api.test_rule(rule.id)
        assert await next_alert(mine.alerts()) == fired
        await daemon.tick("73310")
        await until(has_price(theirs, "73310"))  # after the firing, on the same stream
        assert theirs.last_alert_id is None


async def test_no_answer_is_a_service_error() -> None:
    """Nothing listening: ``ServiceError`` without a status, the network error its cause."""
    async with AlertsAPI(f"http://127.0.0.1:{unused_port()}", timeout=2) as api:
        with pytest.raises(ServiceError) as caught:
            await api.list_rules()
    assert caught.value.status is None
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"id": 0, "rule_id": 1, "tick_id": None, "at": "2026-11-23T20:31:00Z", "data": {}},
        {"id": 1, "rule_id": True, "tick_id": None, "at": "2026-11-23T20:31:00Z", "data": {}},
        {"id": 1, "rule_id": 1, "tick_id": "2", "at": "2026-11-23T20:31:00Z", "data": {}},
        {"id": 1, "rule_id": 1, "tick_id": None, "at": 5, "data": {}},
        {"id": 1, "rule_id": 1, "tick_id": None, "at": "2026-11-23T20:31:00Z", "data": []},
        [],
    ],
)
def test_what_is_not_an_alert_is_a_value_error(data: Any) -> None:
    """Anything but the daemon's alert form is refused, never half-built."""
    with pytest.raises(ValueError, match=r"alert|positive integer|not an object|time"):
        Alert.from_json(data)


def test_alert_accessors_are_typed_and_tolerate_missing_fields() -> None:
    """Accessors give ``None`` for a field absent or of the wrong type; a price is exact."""
    wire = {"id": 3, "rule_id": 1, "tick_id": 9, "at": "2026-11-23T20:31:00.000Z"}
    alert = Alert.from_json(
        {**wire, "data": {"pair": PAIR, "price": "70000.10", "kind": 5, "simulated": True}}
    )
    assert alert.price == Decimal("70000.10")
    assert alert.pair == PAIR
    assert alert.kind is None
    assert alert.detail is None
    assert alert.simulated
    bad = Alert.from_json({**wire, "data": {"price": "NaN"}})
    with pytest.raises(ValueError, match="not finite"):
        _ = bad.price


@settings(max_examples=300, deadline=None)
@given(
    after=st.none() | st.integers(0, 50),
    offered=st.lists(st.integers(1, 60), max_size=40),
    limit=st.integers(1, 50),
)
def test_the_inbox_hands_out_each_id_once_in_increasing_order(
    after: int | None, offered: list[int], limit: int
) -> None:
    """Whatever the daemon repeats or reorders: the ids handed out strictly increase, are
    exactly the records (each above every id before it), and the newest ``limit`` stay."""

    async def run() -> list[int]:
        inbox = AlertInbox(after, limit)
        for ident in offered:
            inbox.offer(Alert(ident, 1, None, datetime.now(UTC), {}))
        inbox.close()
        taken = []
        while (alert := await inbox.take()) is not None:
            taken.append(alert.id)
        return taken

    records, best = [], after
    for ident in offered:
        if best is None or ident > best:
            records.append(ident)
            best = ident
    taken = asyncio.run(run())
    assert taken == records[-limit:]
