"""What clients send to the stream endpoints: HEAD, plain GETs, bad ids, WebSocket ops."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import WSMsgType
from aiohttp.pytest_plugin import AiohttpClient

from bittrade_feed.server.app import create_app
from bittrade_feed.server.badinput import LINES_PER_MINUTE
from bittrade_feed.server.state import HUB, METRICS
from tests.fakeclock import FakeClock
from tests.test_streams import sim_config


def _sample(client, name: str, **labels: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_head_on_streams_answers_headers_only(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """HEAD gets the stream's headers and no body, and never holds a subscriber slot."""
    config = sim_config(daemon_config, stream={"max_subscribers": 1})
    client = await aiohttp_client(create_app(config, fetch=False))
    async with client.get("/api/price-stream") as held:  # the only slot is taken
        await held.content.readuntil(b"\n\n")
        for _ in range(3):
            resp = await client.head("/api/price-stream?pairs=BTC-USD")
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert await resp.read() == b""
        bad = await client.head("/api/price-stream?pairs=NOPE-USD")
        assert bad.status == 400
        ws_head = await client.head("/api/ws")
        assert ws_head.status == 426 and await ws_head.read() == b""
        assert client.app[HUB].count == 1
    assert _sample(client, "bittrade_feed_connections_opened_total", transport="sse") == 1
    assert (
        _sample(client, "bittrade_feed_connections_closed_total", transport="sse", reason="limit")
        == 0
    )


async def test_streams_are_never_compressed(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """A client asking for gzip still gets an identity-encoded event stream."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    headers = {"Accept-Encoding": "gzip, deflate, br"}
    async with client.get("/api/price-stream", headers=headers, auto_decompress=False) as resp:
        assert "Content-Encoding" not in resp.headers
        assert (await resp.content.readuntil(b"\n\n")).startswith(b": hello\nretry: 3000\n")


async def test_plain_get_on_ws_says_what_the_proxy_must_pass(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """/api/ws without the Upgrade headers: 426 problem+json naming the headers to pass."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    resp = await client.get("/api/ws")
    assert resp.status == 426
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert resp.headers["Upgrade"] == "websocket"
    detail = (await resp.json())["detail"]
    for needle in ("Upgrade: websocket", "Connection: Upgrade", "HTTP/1.1", "reverse proxy"):
        assert needle in detail
    assert client.app[HUB].count == 0


ODD_IDS = ["²", "١٢", "9" * 19, "1.0", "+1", "-1", " 1 2"]


@pytest.mark.parametrize("bad", [*ODD_IDS, "9" * 5000])
async def test_odd_digits_are_not_event_ids(
    aiohttp_client: AiohttpClient, daemon_config, bad: str
) -> None:
    """Only ASCII digits (at most 18) are an id, in the header and the query of both streams."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    for resp in (
        await client.get("/api/price-stream", headers={"Last-Event-ID": bad}),
        await client.get("/api/price-stream", params={"last_event_id": bad}),
        await client.get("/api/ws", headers={"Last-Event-ID": bad}),
    ):
        assert resp.status == 400, bad
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert "is not an event id" in (await resp.json())["detail"]


@pytest.mark.parametrize("bad", [*ODD_IDS, 1.0, -1, True, 10**19])
async def test_odd_ids_in_a_ws_op_get_an_error_event(
    aiohttp_client: AiohttpClient, daemon_config, bad: object
) -> None:
    """A subscribe op's last_event_id follows the same rule, as a string or a JSON number."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    async with client.ws_connect("/api/ws?pairs=BTC-USD") as ws:
        await ws.receive_json(timeout=5)  # status
        await ws.send_json({"op": "subscribe", "last_event_id": bad})
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "error" and "is not an event id" in err["data"]["detail"]


@pytest.mark.parametrize(
    "message",
    [
        "[" * 3000,
        '{"op": "subscribe", "pairs": ' + "[" * 2000 + "]" * 2000 + "}",
        '{"op": "subscribe", "pairs": [' + "{}," * 1000 + "1]}",
        '{"op": "subscribe", "last_event_id": ' + "9" * 4000 + "}",
        '{"op": "subscribe", "last_event_id": true}',
        '{"op": "subscribe", "pairs": [1e999]}',
    ],
)
async def test_any_bad_op_gets_an_error_event_and_no_traceback(
    aiohttp_client: AiohttpClient, daemon_config, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    """Nested or odd JSON inside the 4 KiB limit is an error event; the stream stays up."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    async with client.ws_connect("/api/ws?pairs=BTC-USD") as ws:
        await ws.receive_json(timeout=5)  # status
        await ws.send_str(message)
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "error", err
        await ws.send_json({"op": "subscribe", "pairs": ["ETH-USD"]})
        assert (await ws.receive_json(timeout=5))["data"]["pair"] == "ETH-USD"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_op_flood_is_closed_with_1008(
    aiohttp_client: AiohttpClient, daemon_config, clock: FakeClock
) -> None:
    """A burst of ops is served; one more before the bucket refills closes the socket (1008)."""
    config = sim_config(daemon_config, stream={"ws_ops_burst": 5, "ws_ops_per_second": 1})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.ws_connect("/api/ws?pairs=BTC-USD") as ws:
        await ws.receive_json(timeout=5)
        for _ in range(5):
            await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"]})
            assert (await ws.receive_json(timeout=5))["event"] == "status"
        await clock.advance(1.0)  # one token back
        await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"]})
        assert (await ws.receive_json(timeout=5))["event"] == "status"
        for _ in range(50):
            await ws.send_str("x")
        async with asyncio.timeout(5):
            while (msg := await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                assert msg.type == WSMsgType.TEXT
        assert ws.close_code == 1008
        assert "too many messages: at most 5 at once, then 1 per second" in str(msg.extra)
    await asyncio.sleep(0)
    assert client.app[HUB].count == 0
    closed = _sample(
        client, "bittrade_feed_connections_closed_total", transport="ws", reason="abuse"
    )
    assert closed == 1


async def test_ops_do_not_postpone_lifetime_or_heartbeat(
    aiohttp_client: AiohttpClient, daemon_config, clock: FakeClock
) -> None:
    """A client that keeps resubscribing still gets heartbeats on time and is retired on time."""
    config = sim_config(daemon_config, stream={"heartbeat": 15, "max_lifetime": 100})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.ws_connect("/api/ws?pairs=BTC-USD", autoping=False) as ws:
        await ws.receive_json(timeout=5)
        await clock.advance(10)
        await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"]})
        assert (await ws.receive_json(timeout=5))["event"] == "status"
        await clock.advance(6)  # 16 s after the last write before the op
        assert (await ws.receive(timeout=5)).type == WSMsgType.PING
        for _ in range(6):  # ops every 10 s, up to 76 s (the earliest jittered lifetime: 85 s)
            await clock.advance(10)
            await ws.send_json({"op": "subscribe", "pairs": ["BTC-USD"]})
            while (msg := await ws.receive(timeout=5)).type == WSMsgType.PING:
                pass
            assert msg.json()["event"] == "status"
        await clock.advance(40)  # 116 s: past any jittered lifetime (at most 115 s)
        async with asyncio.timeout(5):
            while (msg := await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                pass
        assert msg.extra == "lifetime"


async def test_unparsable_requests_log_one_short_line_each_at_most(
    aiohttp_client: AiohttpClient, daemon_config, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's 400s for broken requests: no traceback, a few warning lines, all counted."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    port = client.server.port
    garbage = [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ] * 8
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for raw in garbage:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        status = await asyncio.wait_for(reader.readline(), 5)
        assert b" 400 " in status, status
        writer.close()
    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert not [r for r in server_lines if r.exc_info or r.levelno >= logging.ERROR]
    assert 1 <= len(server_lines) <= LINES_PER_MINUTE
    assert all(len(r.getMessage()) < 300 for r in server_lines)
    assert "malformed request from 127.0.0.1" in server_lines[0].getMessage()
    assert _sample(client, "bittrade_feed_bad_requests_total") == len(garbage)
