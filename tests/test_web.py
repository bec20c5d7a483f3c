"""REST endpoints and the whole daemon end to end, against fake exchanges."""

from __future__ import annotations

import asyncio
import sqlite3

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestServer
from yarl import URL

from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB
from tests.fakeexchange import FakeExchanges
from tests.streamutil import events, frames


async def test_first_tick_everywhere(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """The first tick has id 1 and the median price on SSE, in SQLite and in /api/prices."""
    config = daemon_config()
    client = await aiohttp_client(create_app(config, fetch=False))
    async with client.get("/api/price-stream") as resp:
        await frames(resp, 1)  # retry + status
        await client.app[FETCHER].run_cycle()
        ((ident, event, data),) = await events(resp, 1)
    assert (ident, event, data["price"], data["sources"]) == (
        "1",
        "price",
        "73365.3",
        ["bitfinex", "kraken"],
    )
    row = (
        sqlite3.connect(config.database.path)
        .execute("SELECT id, pair, price, sources FROM ticks")
        .fetchall()
    )
    assert row == [(1, "BTC-USDT", "73365.3", "bitfinex,kraken")]
    body = await (await client.get("/api/prices", params={"pair": "BTC-USDT"})).json()
    assert [(p["id"], p["price"]) for p in body["prices"]] == [(1, "73365.3")]
    price = await (await client.get("/api/price")).json()
    assert (price["id"], price["state"], price["stale"]) == (1, "live", False)


async def test_restart_on_same_database_continues_ids(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """After a restart on the same database, ids continue and the snapshot is the last price."""
    config = daemon_config()
    first = await aiohttp_client(create_app(config, fetch=False))
    for _ in range(3):
        await first.app[FETCHER].run_cycle()
    await first.close()
    second = await aiohttp_client(create_app(config, fetch=False))
    async with second.get("/api/price-stream") as resp:
        snapshot = await events(resp, 1)
        assert snapshot[0][0] == "3"
        await second.app[FETCHER].run_cycle()
        got = await events(resp, 2)
    assert [g[0] for g in got if g[1] == "price"] == ["4"]


@pytest.mark.parametrize("subscribers", [1, 200])
async def test_upstream_requests_do_not_grow_with_subscribers(
    aiohttp_server, daemon_config, fx: FakeExchanges, subscribers: int
) -> None:
    """With 1 or 200 subscribers, each interval costs each exchange exactly one request."""
    # All 200 come from 127.0.0.1: the per-address limits are off for this test.
    unlimited = {"max_per_address": 0, "connect_burst": 0}
    server = await aiohttp_server(create_app(daemon_config(stream=unlimited), fetch=False))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        streams = [
            await session.get(server.make_url("/api/price-stream")) for _ in range(subscribers)
        ]
        for _ in range(3):
            await server.app[FETCHER].run_cycle()
        assert server.app[HUB].count == subscribers
        for resp in streams:
            # retry + "no price yet", price 1, "live", prices 2 and 3
            got = await events(resp, 5)
            assert [g[0] for g in got if g[1] == "price"] == ["1", "2", "3"]
            resp.close()
        async with asyncio.timeout(5):  # each closed stream lets go of its subscriber
            while server.app[HUB].count:
                await asyncio.sleep(0.01)
    assert fx.requests == {"kraken": 3, "bitfinex": 3}


async def test_price_before_first_tick_is_503_problem(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """No price yet: 503 problem+json saying so, with Retry-After."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    resp = await client.get("/api/price")
    assert resp.status == 503
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" in resp.headers
    detail = (await resp.json())["detail"]
    assert detail.startswith("no price for BTC-USDT yet: no fetch has reached a quorum")
    assert detail.count("no price") == 1, "said once, not 'no price yet: no price yet'"


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("pair=BTCUSD", "unknown pair 'BTCUSD'"),
        ("pair=BTC-USDT,ETH-USD", "exactly one pair"),
        ("since=yesterday", "since='yesterday' is not a time"),
        ("until=2026-13-45T00:00:00Z", "until="),
        ("limit=0", "limit='0' must be a whole number from 1 to 10000"),
        ("limit=abc", "limit='abc'"),
        ("limit=100000", "limit='100000'"),
        ("since=2026-11-23T10:00:00Z&until=2026-11-23T09:00:00Z", "since must be earlier"),
        ("until=253402300800", "until='253402300800' is not a time"),
        ("until=9223372036854775808", "until='9223372036854775808' is not a time"),
        ("until=1e30", "until='1e30' is not a time"),
        ("since=0001-01-01T00:00:00%2B23:59", "since='0001-01-01T00:00:00+23:59' is not"),
        ("until=9999-12-31T23:59:59-23:59", "until='9999-12-31T23:59:59-23:59' is not"),
        ("since=-1", "since='-1' is not a time"),
        ("since=%D9%A1%D9%A2", "since='\u0661\u0662' is not a time"),
        ("since=2026-11-23T20:31:00%D9%A1Z", "is not a time"),
        ("limit=%C2%B2", "limit='\u00b2' must be a whole number"),
        ("limit=%D9%A1%D9%A2", "must be a whole number from 1 to 10000"),
        ("limit=" + "9" * 5000, "limit='" + "9" * 40 + "...' must be a whole number"),
        ("pair=" + "A" * 5000, "unknown pair '" + "A" * 40 + "...' in pair"),
    ],
)
async def test_prices_bad_parameters_are_400(
    aiohttp_client: AiohttpClient, daemon_config, query: str, needle: str
) -> None:
    """Every bad /api/prices parameter is a 400 problem that names it."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    resp = await client.get(URL(f"/api/prices?{query}", encoded=True))
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = await resp.json()
    assert needle in body["detail"]
    assert body["status"] == 400 and body["title"] == "Bad Request"


async def test_prices_range_and_limit(aiohttp_client: AiohttpClient, daemon_config, clock) -> None:
    """since/until select a half-open window; limit truncates and says so."""
    client = await aiohttp_client(create_app(daemon_config(), clock=clock, fetch=False))
    for _ in range(4):
        await client.app[FETCHER].run_cycle()
        await clock.advance(10)
    t0 = int(clock.time()) - 40
    body = await (await client.get(f"/api/prices?since={t0 + 10}&until={t0 + 30}")).json()
    assert [p["id"] for p in body["prices"]] == [2, 3]
    body = await (await client.get(f"/api/prices?since={t0}&limit=2")).json()
    assert ([p["id"] for p in body["prices"]], body["truncated"]) == ([1, 2], True)


async def test_garbage_requests_never_500(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """Odd paths and methods get 4xx problem answers (any query: test_hostile_requests.py)."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    probes = [
        ("GET", "/nope"),
        ("POST", "/api/price"),
        ("DELETE", "/api/prices"),
        ("GET", "/api/prices?pair=%00"),
        ("GET", "/api/price?pair=" + "A" * 5000),
        ("GET", "/api/prices?since=%FF%FE"),
        ("GET", "/api/prices?limit=-5"),
        ("GET", "/api/price-stream?pairs=,,,"),
        ("GET", "/api/prices?since=1e999"),
        ("GET", "/api/price-stream?last_event_id=%20"),
        ("GET", "/api/ws?pairs=x"),
    ]
    for method, path in probes:
        resp = await client.request(method, path)
        assert 400 <= resp.status < 500, (method, path, resp.status)
        assert resp.headers["Content-Type"] == "application/problem+json", path
        assert (await resp.json())["detail"]


async def test_sources_report_health(aiohttp_client: AiohttpClient, daemon_config, fx) -> None:
    """/api/sources shows each source's breaker state, last success and last error."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    fx.answer("bitfinex", status=503, raw=b"<html>down</html>")
    await client.app[FETCHER].run_cycle()
    body = await (await client.get("/api/sources")).json()
    by_name = {s["name"]: s for s in body["sources"]}
    assert by_name["kraken"]["last_success"].endswith("Z")
    assert by_name["kraken"]["last_error"] is None
    assert by_name["bitfinex"]["last_error_reason"] == "unavailable"
    assert "HTTP 503" in by_name["bitfinex"]["last_error_message"]
    assert by_name["bitfinex"]["pairs"] == ["BTC-USDT"]


async def test_readyz_tracks_freshness(aiohttp_client: AiohttpClient, daemon_config, clock) -> None:
    """/readyz is 503 before the first price and once it is older than stale_after."""
    config = daemon_config(feed={"stale_after": 5.0})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["price:BTC-USDT"]["ok"] is False
    await client.app[FETCHER].run_cycle()
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["database"] == {"ok": True, "detail": "writable"}
    await clock.advance(6)
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


async def test_real_loop_keeps_ticking(aiohttp_server, daemon_config) -> None:
    """With the real clock, the loop started by the app ticks on its own every interval."""
    config = daemon_config(feed={"interval": 0.2, "request_timeout": 0.1})
    server = TestServer(create_app(config))
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/api/price-stream")) as resp,
        ):
            ids = []
            async with asyncio.timeout(5):
                while len(ids) < 3:
                    ((ident, event, _),) = await events(resp, 1)
                    if event == "price":
                        ids.append(int(ident))
        assert ids == sorted(ids) and len(set(ids)) == 3
    finally:
        await server.close()


async def test_retention_deletes_old_prices_keeps_latest(
    aiohttp_client: AiohttpClient, daemon_config, clock
) -> None:
    """With retention_days set, the hourly job drops old prices but never the latest."""
    config = daemon_config(database={"retention_days": 1})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    for _ in range(3):
        await client.app[FETCHER].run_cycle()
    await clock.advance(2 * 86400)  # the job runs hourly on the fake clock
    con = sqlite3.connect(config.database.path)
    assert con.execute("SELECT id FROM ticks").fetchall() == [(3,)]
    con.close()


async def test_price_says_suspect_while_a_jump_is_held(
    aiohttp_client: AiohttpClient, daemon_config, fx: FakeExchanges
) -> None:
    """While the jump guard holds a price, /api/price keeps the last one and says suspect."""
    client = await aiohttp_client(create_app(daemon_config(), fetch=False))
    fetcher = client.app[FETCHER]
    await fetcher.run_cycle()
    first = await (await client.get("/api/price")).json()
    for name in ("kraken", "bitfinex"):
        fx.price(name, "733650")  # x10 from every source: held, not published
    await fetcher.run_cycle()
    held = await (await client.get("/api/price")).json()
    assert (held["state"], held["stale"]) == ("suspect", False)
    assert (held["id"], held["price"]) == (first["id"], first["price"])
