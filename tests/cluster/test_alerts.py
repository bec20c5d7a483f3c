"""Alerts in a cluster (issue 14): real daemons as child processes on one real redis-server.

Only the leader evaluates and delivers; a rule made through any node is evaluated by the
leader; alert events reach the streams of every node; a webhook in flight when the leader
is killed is delivered by the next one under the same ``webhook-id``; a leader paused past
its lease records no firing the next leader made.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp.pytest_plugin import AiohttpServer
from standardwebhooks import Webhook

from tests.cluster.daemons import (
    INTERVAL,
    LEASE_MS,
    Client,
    Node,
    cluster,
    eventually,
    leader_of,
    not_leading,
    until_prices,
)
from tests.cluster.redisproc import RedisServer
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges
from tests.test_alert_outbox import Receiver, serve

LEASE = LEASE_MS / 1000
ALERTS = {
    "enabled": True,
    "webhook_allow_http": True,
    "webhook_allow": ["127.0.0.1/32"],
    "checkpoint_seconds": 1.0,
}
RULES = "/api/alerts/rules"
HOOKS = "/api/alerts/webhooks"
LEADER_TASKS = ["alerts", "alerts-outbox", "fetch-loop"]


def alerts_of(client: Client) -> list[dict[str, Any]]:
    """The ``alert`` events a stream client received, in order."""
    return [data for event, _, data, _ in client.events if event == "alert"]


async def firings(n: Node, rule_id: int) -> list[dict[str, Any]]:
    """The rule's firings as ``n`` lists them (from Redis), oldest first."""
    status, body = await n.json(f"{RULES}/{rule_id}/firings?limit=1000")
    assert status == 200, body
    return list(reversed(body["firings"]))


async def runs_alerts(lead: Node, other: Node) -> bool:
    """The leader runs every leader task and the other node none."""
    mine, theirs = await lead.cluster(), await other.cluster()
    return mine.get("leader_tasks") == LEADER_TASKS and theirs.get("leader_tasks") == []


async def test_a_rule_made_on_a_follower_fires_on_the_leader_and_reaches_every_stream(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer, aiohttp_server: AiohttpServer
) -> None:
    """(a) A rule created through node B fires on a tick the leader fetched; the ``alert``
    event reaches SSE streams on both nodes, and its webhook goes out; a test firing
    through B does both too."""
    receiver = Receiver()
    server = await serve(aiohttp_server, receiver)
    async with cluster(tmp_path, fx, redis_server.url, 2, alerts=ALERTS) as nodes:
        lead = await leader_of(nodes)
        (other,) = [n for n in nodes if n is not lead]
        await eventually(lambda: runs_alerts(lead, other), 5, "the leader's alert tasks")
        assert await lead.metric("bittrade_feed_cluster_leader_task" + '{task="alerts"}') == 1
        assert await other.metric("bittrade_feed_cluster_leader_task" + '{task="alerts"}') == 0
        streams = [Client([other.url]).start(), Client([lead.url]).start()]
        await until_prices(streams, 1)
        before = (await other.cluster())["position"]
        status, endpoint = await other.post(HOOKS, {"url": str(server.make_url("/hook"))})
        assert status == 201, endpoint
        body = {"pair": PAIR, "kind": "above", "level": "1", "webhooks": [endpoint["id"]]}
        status, rule = await other.post(RULES, body)
        assert status == 201, rule

        async def on_both(firing_id: int | None = None) -> bool:
            ids = [[a["id"] for a in alerts_of(s) if a["rule_id"] == rule["id"]] for s in streams]
            return all(ids) if firing_id is None else all(firing_id in i for i in ids)

        await eventually(on_both, 10, "the alert event on both nodes' streams")
        status, test = await other.post(f"{RULES}/{rule['id']}/test")
        assert status == 201, test
        await eventually(lambda: on_both(test["id"]), 10, "the test firing on both streams")
        await receiver.wait_for(2)  # both webhooks, sent by the leader's worker
        await asyncio.sleep(3 * INTERVAL)  # a "once" rule: later ticks must fire nothing
        listed = [await firings(n, rule["id"]) for n in nodes]
        status, tick = await lead.json(f"/api/prices?pair={PAIR}&since=0&limit=10000")
        for s in streams:
            await s.stop()
    assert listed[0] == listed[1]
    fired, tested = listed[0]
    assert tested["id"] == test["id"] and tested["tick_id"] is None
    assert fired["tick_id"] > before  # the first tick after the rule's creation point
    stored = {t["id"]: t for t in tick["prices"]}
    assert fired["data"]["price"] == stored[fired["tick_id"]]["price"]
    for s in streams:
        # Each firing once per stream, in increasing id.
        assert [a["id"] for a in alerts_of(s)] == [fired["id"], tested["id"]]
        # Every node read the firing counter from Redis, so each opening was told its
        # resume point (no firing existed yet).
        positions = [data for event, _, data, _ in s.events if event == "alerts"]
        assert positions and all(p == {"after": 0} for p in positions)
    sent = {
        h["webhook-id"]: Webhook(endpoint["secret"]).verify(raw, h) for _, raw, h in receiver.got
    }
    assert sent.keys() == {f"alert_{f['id']}_webhook_{endpoint['id']}" for f in (fired, tested)}


async def test_leader_kill_9_mid_delivery_the_next_leader_delivers_with_the_same_id(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer, aiohttp_server: AiohttpServer
) -> None:
    """(b) The leader is killed while its webhook request is in flight; the daemon that
    takes the lease delivers it; every delivery carries one webhook-id and verifies."""
    receiver = Receiver()
    receiver.hold = asyncio.Event()  # the first request is not answered until the kill
    server = await serve(aiohttp_server, receiver)
    async with cluster(tmp_path, fx, redis_server.url, 2, alerts=ALERTS) as nodes:
        lead = await leader_of(nodes)
        (other,) = [n for n in nodes if n is not lead]
        await eventually(lambda: runs_alerts(lead, other), 5, "the leader's alert tasks")
        status, endpoint = await other.post(HOOKS, {"url": str(server.make_url("/hook"))})
        assert status == 201, endpoint
        body = {"pair": PAIR, "kind": "above", "level": "1", "webhooks": [endpoint["id"]]}
        status, rule = await other.post(RULES, body)
        assert status == 201, rule
        await receiver.wait_for(1)  # sent by the leader's worker: the only one running
        lead.daemon.signal(signal.SIGKILL)
        assert await lead.daemon.wait() == -signal.SIGKILL
        receiver.hold.set()
        await receiver.wait_for(2)
        assert await leader_of([other]) is other
        delivered = 'bittrade_feed_alert_deliveries_total{outcome="delivered"}'
        await eventually(lambda: _metric_is(other, delivered, 1), 5, "the delivery recorded")
        [fired] = await firings(other, rule["id"])
        status, failed = await other.json("/api/alerts/deliveries")
    assert status == 200 and failed["deliveries"] == []
    wanted = f"alert_{fired['id']}_webhook_{endpoint['id']}"
    assert {headers["webhook-id"] for _, _, headers in receiver.got} == {wanted}
    for _, raw, headers in receiver.got:
        assert Webhook(endpoint["secret"]).verify(raw, headers)["data"] == fired["data"]


async def _metric_is(n: Node, name: str, value: float) -> bool:
    try:
        return await n.metric(name) == value
    except AssertionError:  # a labelled series appears with its first sample
        return False


async def test_a_leader_paused_past_its_lease_records_no_firing_twice(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """(c) SIGSTOP the leader past its lease, then SIGCONT: the next leader evaluates from
    the saved states; no (rule, tick) has two firings and repeats stay a cooldown apart."""
    async with cluster(tmp_path, fx, redis_server.url, 2, alerts=ALERTS) as nodes:
        lead = await leader_of(nodes)
        (other,) = [n for n in nodes if n is not lead]
        await eventually(lambda: runs_alerts(lead, other), 5, "the leader's alert tasks")
        repeat = {"mode": "repeat", "cooldown_s": 1}
        body = {"pair": PAIR, "kind": "above", "level": "1", "frequency": repeat}
        status, rule = await lead.post(RULES, body)
        assert status == 201, rule

        async def fired(at_least: int) -> bool:
            return len(await firings(other, rule["id"])) >= at_least

        await eventually(lambda: fired(2), 10, "two firings by the first leader")
        lead.daemon.signal(signal.SIGSTOP)
        try:
            assert await leader_of([other], timeout=LEASE + INTERVAL + 2) is other
            paused = len(await firings(other, rule["id"]))
            await eventually(lambda: fired(paused + 1), 10, "a firing by the next leader")
            await asyncio.sleep(LEASE)
        finally:
            lead.daemon.signal(signal.SIGCONT)
        await eventually(lambda: not_leading(lead), 5, "the paused leader to step down")
        await eventually(lambda: runs_alerts(other, lead), 5, "alert tasks moved to the new leader")
        resumed = len(await firings(other, rule["id"]))
        await eventually(lambda: fired(resumed + 2), 10, "firings after the SIGCONT")
        listed = [await firings(n, rule["id"]) for n in nodes]
    assert listed[0] == listed[1]
    ticks = [f["tick_id"] for f in listed[0]]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    assert ticks == sorted(ticks)
    at = [datetime.fromisoformat(f["data"]["ts"]) for f in listed[0]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
    assert min(gaps) >= 1.0, gaps
