"""kill -9 of a real daemon between the commit of a firing and the end of its send."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from aiohttp.test_utils import unused_port
from standardwebhooks import Webhook

from tests.childdaemon import config_dict, run_daemon, write_config
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges


async def test_a_firing_committed_before_kill_9_is_delivered_after_restart_with_its_id(
    tmp_path: Path, fx: FakeExchanges, aiohttp_server: AiohttpServer
) -> None:
    got: list[tuple[bytes, dict[str, str]]] = []
    arrived, hold = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        got.append((await request.read(), dict(request.headers)))
        arrived.set()
        await hold.wait()  # the first send is still in flight when the daemon dies
        return web.Response()

    receiver = web.Application()
    receiver.router.add_post("/hook", handle)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    port = unused_port()
    alerts = {"enabled": True, "webhook_allow_http": True, "webhook_allow": ["127.0.0.1/32"]}
    raw = config_dict(tmp_path, fx, port, alerts=alerts)
    config = write_config(tmp_path / "c.toml", raw)
    async with run_daemon(config, tmp_path, port=port) as daemon, aiohttp.ClientSession() as http:
        await daemon.until_answers()
        base = daemon.url + "/api/alerts"
        async with http.post(base + "/webhooks", json={"url": str(server.make_url("/hook"))}) as r:
            assert r.status == 201, await r.text()
            endpoint = await r.json()
        rule = {"pair": PAIR, "kind": "above", "level": "1", "webhooks": [endpoint["id"]]}
        async with http.post(base + "/rules", json=rule) as r:
            rule_id = (await r.json())["id"]
        async with http.post(f"{base}/rules/{rule_id}/test") as r:
            assert r.status == 201  # committed: the firing and its outbox row
            firing = (await r.json())["id"]
        await asyncio.wait_for(arrived.wait(), 10)
        daemon.signal(signal.SIGKILL)
        assert await daemon.wait() == -signal.SIGKILL
    arrived.clear()
    hold.set()
    async with run_daemon(config, tmp_path, port=port) as daemon:
        await daemon.until_answers()
        await asyncio.wait_for(arrived.wait(), 10)
    wanted = f"alert_{firing}_webhook_{endpoint['id']}"
    assert [h["webhook-id"] for _, h in got[:2]] == [wanted, wanted]
    Webhook(endpoint["secret"]).verify(got[1][0], got[1][1])
