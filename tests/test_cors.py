"""CORS and the WebSocket Origin check (issue 13): ``server/cors.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from multidict import CIMultiDictProxy

from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB
from tests.authutil import make_key
from tests.streamutil import frames
from tests.test_auth_http import auth_config, bearer, refusals
from tests.test_streams import sim_config

ALLOWED = "https://app.example.com"
DENIED = "https://evil.example"


def cors_config(daemon_config: Callable[..., Config], **sections: object) -> Config:
    return sim_config(daemon_config, server={"cors_origins": [ALLOWED]}, **sections)


def with_cors(config: Config) -> Config:
    return replace(config, server=replace(config.server, cors_origins=(ALLOWED,)))


def assert_allowed(headers: CIMultiDictProxy[str], origin: str = ALLOWED) -> None:
    assert headers["Access-Control-Allow-Origin"] == origin
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in headers.getall("Vary")


def assert_denied(headers: CIMultiDictProxy[str]) -> None:
    assert "Access-Control-Allow-Origin" not in headers
    assert "Access-Control-Allow-Credentials" not in headers
    assert "Origin" in headers.getall("Vary")


async def test_listed_origin_gets_cors_headers_on_json_stream_and_problem(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """A listed origin gets its own origin back with credentials: on a JSON answer, on an
    SSE stream before its first event, and on a problem answer."""
    client = await aiohttp_client(create_app(cors_config(daemon_config), fetch=False))
    await client.app[FETCHER].run_cycle()
    origin = {"Origin": ALLOWED}
    assert_allowed((await client.get("/api/price", headers=origin)).headers)
    async with client.get("/api/price-stream", headers=origin) as stream:
        assert stream.status == 200
        assert_allowed(stream.headers)
        await frames(stream, 1)
    problem = await client.get("/api/price?pair=NOPE-USD", headers=origin)
    assert problem.status == 400
    assert_allowed(problem.headers)
    assert_allowed((await client.get("/api/nothing-here", headers=origin)).headers)


async def test_unlisted_origin_gets_no_cors_headers(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """Another origin, a look-alike, or no Origin: no allow headers, always Vary: Origin."""
    client = await aiohttp_client(create_app(cors_config(daemon_config), fetch=False))
    await client.app[FETCHER].run_cycle()
    for origin in (DENIED, ALLOWED + ".evil.example", "http://app.example.com", "null"):
        assert_denied((await client.get("/api/price", headers={"Origin": origin})).headers)
        async with client.get("/api/price-stream", headers={"Origin": origin}) as stream:
            assert stream.status == 200
            assert_denied(stream.headers)
    assert_denied((await client.get("/api/price")).headers)


async def test_no_cors_origins_means_no_cors_at_all(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """The default (no list) allows no other origin."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    assert_denied((await client.get("/healthz", headers={"Origin": ALLOWED})).headers)


@pytest.mark.parametrize(("origin", "allowed"), [(ALLOWED, True), (DENIED, False)])
async def test_preflight_with_auth_on_needs_no_credential(
    aiohttp_client: AiohttpClient,
    daemon_config: Callable[..., Config],
    tmp_path: Path,
    origin: str,
    allowed: bool,
) -> None:
    """OPTIONS preflights are answered 204 before authentication; only a listed origin gets
    the allowed methods and headers (Authorization, Last-Event-ID)."""
    _, record = make_key("pairs:*")
    config = with_cors(auth_config(daemon_config, tmp_path, record))
    client = await aiohttp_client(create_app(config, fetch=False))
    resp = await client.options(
        "/api/price-stream",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id",
        },
    )
    assert resp.status == 204
    if allowed:
        assert_allowed(resp.headers)
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "Last-Event-ID" in resp.headers["Access-Control-Allow-Headers"]
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    else:
        assert_denied(resp.headers)
        assert "Access-Control-Allow-Headers" not in resp.headers


async def test_credentialed_cross_origin_requests_with_auth_on(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], tmp_path: Path
) -> None:
    """With a credential: the listed origin's stream carries the allow headers; a 401 for a
    missing credential does too (so the page can read why); a denied origin gets none."""
    key, record = make_key("pairs:*")
    config = with_cors(auth_config(daemon_config, tmp_path, record))
    client = await aiohttp_client(create_app(config, fetch=False))
    async with client.get(
        "/api/price-stream", headers={"Origin": ALLOWED, **bearer(key)}
    ) as stream:
        assert stream.status == 200
        assert_allowed(stream.headers)
    unauthorized = await client.get("/api/price-stream", headers={"Origin": ALLOWED})
    assert unauthorized.status == 401
    assert_allowed(unauthorized.headers)
    async with client.get("/api/price-stream", headers={"Origin": DENIED, **bearer(key)}) as s:
        assert s.status == 200  # not a browser's page: the browser keeps it from the page
        assert_denied(s.headers)


# -- WebSocket Origin -----------------------------------------------------------------


async def test_foreign_origin_websocket_is_refused_before_taking_a_slot(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """A handshake from an unlisted origin gets 403 problem, counted as origin; no slot."""
    client = await aiohttp_client(create_app(cors_config(daemon_config), fetch=False))
    for origin in (DENIED, "null", "http://127.0.0.1.evil.example"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/api/ws", headers={"Origin": origin})
        assert refused.value.status == 403
    resp = await client.get(
        "/api/ws",
        headers={"Origin": DENIED, "Upgrade": "websocket", "Connection": "Upgrade"},
    )
    body = await resp.json()
    assert "neither this daemon's own origin nor listed in server.cors_origins" in body["detail"]
    assert client.app[HUB].admitted == 0
    assert refusals(client, "origin") == 4


async def test_own_and_listed_origins_and_no_origin_may_open_websockets(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """The daemon's own origin (its Host, any scheme), a listed one, or none (not a browser)."""
    client = await aiohttp_client(create_app(cors_config(daemon_config), fetch=False))
    host = f"{client.host}:{client.port}"
    for headers in ({"Origin": f"http://{host}"}, {"Origin": f"https://{host}"},
                    {"Origin": ALLOWED}, {}):  # fmt: skip
        async with client.ws_connect("/api/ws", headers=headers) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT
    async with asyncio.timeout(5):
        while client.app[HUB].admitted:
            await asyncio.sleep(0.01)
    assert refusals(client, "origin") == 0
