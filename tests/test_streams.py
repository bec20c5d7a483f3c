"""The SSE and WebSocket endpoints and the hub behind them, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Callable, Sequence
from decimal import Decimal

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient

from bittrade_feed.broadcast import wire
from bittrade_feed.broadcast.wire import chunk, encode, sse_frame, ws_frame
from bittrade_feed.config import Config
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB, METRICS, STORE
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock
from tests.streamcheck import check_stream, stored_ticks
from tests.streamutil import events, frames, parse
from tests.test_metrics import until

PAIRS = ("BTC-USD", "ETH-USD")

TICK = Tick(1842, "BTC-USD", Decimal("64123.45"), 1_795_465_860_123, ("bitstamp", "coinbase"))
PRICE_FRAME = (
    b"id: 1842\nevent: price\n"
    b'data: {"id":1842,"pair":"BTC-USD","price":"64123.45","ts":"2026-11-23T20:31:00.123Z",'
    b'"sources":["bitstamp","coinbase"],"simulated":false}\n\n'
)


def test_price_frame_exact_bytes() -> None:
    """A price event is the wire contract's bytes exactly."""
    assert sse_frame("price", TICK.to_json(), TICK.id) == PRICE_FRAME


def test_status_frame_has_no_id() -> None:
    """A status event carries no id line, so the client's resume point is untouched."""
    status = FeedStatus("BTC-USD", "stale", 1_795_465_980_000, "quorum not met: 1 of 2 sources")
    assert sse_frame("status", status.to_json()) == (
        b"event: status\n"
        b'data: {"state":"stale","pair":"BTC-USD","since":"2026-11-23T20:33:00.000Z",'
        b'"reason":"quorum not met: 1 of 2 sources","simulated":false}\n\n'
    )


def test_chunk_and_ws_framing() -> None:
    """Chunked framing and unmasked WebSocket text frames, including the 16-bit length form."""
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert ws_frame(b"hi") == b"\x81\x02hi"
    assert ws_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    sse_chunked, sse_raw, ws = encode("price", TICK.to_json(), TICK.id)
    assert sse_chunked == chunk(sse_raw)
    assert ws[:2] == b"\x81\x7e"  # a price message is over 125 bytes: 16-bit length
    assert json.loads(ws[4:]) == {"event": "price", "data": TICK.to_json()}


def test_resync_and_heartbeat_exact_bytes() -> None:
    """Resync carries the latest id and snapshot; heartbeats are a comment and a WS ping."""
    frame = sse_frame("resync", {"reason": "r", "ticks": [TICK.to_json()]}, TICK.id)
    assert frame == (
        b"id: 1842\nevent: resync\n"
        b'data: {"reason":"r","ticks":[{"id":1842,"pair":"BTC-USD","price":"64123.45",'
        b'"ts":"2026-11-23T20:31:00.123Z","sources":["bitstamp","coinbase"],"simulated":false}]}\n\n'
    )
    assert wire.HEARTBEATS == (
        b"e\r\n: keep-alive\n\n\r\n",
        b": keep-alive\n\n",
        b"\x89\x00",
    )


def test_ws_status_message_exact_bytes() -> None:
    """A WebSocket status message is one unmasked text frame of the same JSON."""
    status = FeedStatus("BTC-USD", "live", 1_795_465_980_000, "price updated")
    payload = (
        b'{"event":"status","data":{"state":"live","pair":"BTC-USD",'
        b'"since":"2026-11-23T20:33:00.000Z","reason":"price updated","simulated":false}}'
    )
    assert 125 < len(payload) < 65536  # so the length takes the 16-bit form
    header = b"\x81\x7e" + len(payload).to_bytes(2, "big")
    assert encode("status", status.to_json())[2] == header + payload


def sim_config(daemon_config: Callable[..., Config], **sections: object) -> Config:
    """Two pairs from the simulated source (fake prices; no exchange needed)."""
    feed = {
        "pairs": ["BTC-USD", "ETH-USD"],
        "sources": {"BTC-USD": ["simulated"], "ETH-USD": ["simulated"]},
    }
    feed.update(sections.pop("feed", {}))  # type: ignore[arg-type]
    return daemon_config(("simulated",), feed=feed, **sections)


async def test_sse_headers_retry_and_snapshot(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """On connect: SSE headers, the retry line, latest price per pair, then each pair's status."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await client.app[FETCHER].run_cycle()
    async with client.get("/api/price-stream") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Accel-Buffering"] == "no"
        raw = await frames(resp, 4)
    got = [parse(f) for f in raw]
    # The retry line rides in the first event's block: a retry-only block would make
    # some clients (httpx-sse) parse an empty data field.
    assert raw[0].startswith(b": hello\nretry: 3000\nid: 1\nevent: price\ndata: {")
    assert [(i, e, d["pair"]) for i, e, d in got[0:2]] == [
        ("1", "price", "BTC-USD"),
        ("2", "price", "ETH-USD"),
    ]
    assert [(e, d["state"]) for _, e, d in got[2:]] == [("status", "live"), ("status", "live")]


async def test_pair_filter_and_unknown_pair(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """?pairs= limits the stream; an unknown pair is a 400 naming it."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await client.app[FETCHER].run_cycle()
    async with client.get("/api/price-stream?pairs=eth-usd") as resp:
        got = await events(resp, 2)
        await client.app[FETCHER].run_cycle()
        (live,) = await events(resp, 1)
    assert [d["pair"] for _, e, d in got] == ["ETH-USD", "ETH-USD"]
    assert (live[0], live[2]["pair"]) == ("4", "ETH-USD")
    resp = await client.get("/api/price-stream?pairs=BTC-USD,DOGE-USD")
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert "unknown pair 'DOGE-USD'" in (await resp.json())["detail"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "99999999999999999999"])
async def test_bad_last_event_id_is_400(aiohttp_client: AiohttpClient, daemon_config, bad) -> None:
    """A resume point that is not a whole number is refused, naming the parameter."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    for resp in (
        await client.get("/api/price-stream", headers={"Last-Event-ID": bad}),
        await client.get(f"/api/price-stream?last_event_id={bad}"),
    ):
        assert resp.status == 400
        assert "Last-Event-ID" in (await resp.json())["detail"]


async def _ticks(client, n: int) -> None:
    for _ in range(n):
        await client.app[FETCHER].run_cycle()


@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_from_ring(aiohttp_client: AiohttpClient, daemon_config, how: str) -> None:
    """Last-Event-ID (header or query) replays exactly the missed ticks of the subscribed pairs."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await _ticks(client, 3)  # ids 1..6, alternating BTC, ETH
    kwargs = (
        {"headers": {"Last-Event-ID": "2"}}
        if how == "header"
        else {"params": {"last_event_id": "2"}}
    )
    async with client.get("/api/price-stream?pairs=BTC-USD", **kwargs) as resp:
        got = await events(resp, 3)
    assert [(i, d["pair"]) for i, e, d in got[0:2]] == [("3", "BTC-USD"), ("5", "BTC-USD")]
    assert got[2][1] == "status"


async def test_resume_from_sqlite_when_ring_is_short(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A resume point older than the ring is served from SQLite, then the ring, in order."""
    config = sim_config(daemon_config, stream={"replay_limit": 4})
    client = await aiohttp_client(create_app(config, fetch=False))
    await _ticks(client, 4)  # ids 1..8; ring holds 5..8
    async with client.get(
        "/api/price-stream?pairs=BTC-USD", headers={"Last-Event-ID": "1"}
    ) as resp:
        got = await events(resp, 4)
    assert [i for i, e, _ in got] == ["3", "5", "7", None]


async def test_resume_past_horizon_gets_one_resync(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """More missed ticks than can be replayed: one resync event with the latest snapshot."""
    config = sim_config(daemon_config, stream={"replay_limit": 2})
    client = await aiohttp_client(create_app(config, fetch=False))
    await _ticks(client, 4)
    async with client.get("/api/price-stream", headers={"Last-Event-ID": "1"}) as resp:
        got = await events(resp, 3)
    ident, event, data = got[0]
    assert (ident, event) == ("8", "resync")
    assert "more than 2 events missed" in data["reason"]
    assert [t["id"] for t in data["ticks"]] == [7, 8]
    assert [e for _, e, _ in got[1:]] == ["status", "status"]


async def test_resume_ahead_of_feed_resyncs(aiohttp_client: AiohttpClient, daemon_config) -> None:
    """An id this feed never issued (say, another database) gets a resync, not silence."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await _ticks(client, 1)
    async with client.get("/api/price-stream", headers={"Last-Event-ID": "500"}) as resp:
        (resync,) = await events(resp, 1)
    assert resync[1] == "resync" and "ahead" in resync[2]["reason"]


async def test_resume_across_three_reconnects_no_gap_no_dup(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A client of two pairs that reconnects three times with its last id sees every id once."""
    config = sim_config(daemon_config, stream={"replay_limit": 3})
    client = await aiohttp_client(create_app(config, fetch=False))
    hub = client.app[HUB]
    seen: list[int] = []
    for _ in range(4):
        resume = seen[-1] if seen else None
        headers = {"Last-Event-ID": str(resume)} if seen else {}
        got = []
        async with client.get("/api/price-stream", headers=headers) as resp:
            await _ticks(client, 1)  # one price of each pair while connected
            while not seen or seen[-1] < hub.max_id:
                (event,) = await events(resp, 1)
                got.append(event)
                if event[1] == "price":
                    seen.append(int(event[0]))
        stored = await stored_ticks(config.database.path)
        check_stream(got, stored, PAIRS, resume_from=resume)
        await _ticks(client, 1)  # two prices published while this client is away
    assert {stored[i]["pair"] for i in seen} == set(PAIRS)
    assert seen == list(range(1, 15))


async def test_status_events_reach_subscribers(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A stale/live change is pushed to subscribers as a status event without id."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    async with client.get("/api/price-stream?pairs=BTC-USD") as resp:
        await frames(resp, 1)  # retry + status (no price yet)
        client.app[HUB].publish_status(FeedStatus("BTC-USD", "stale", 0, "quorum not met"))
        client.app[HUB].publish_status(FeedStatus("ETH-USD", "stale", 0, "other pair"))
        (got,) = await events(resp, 1)
    assert got[0] is None and got[1] == "status" and got[2]["reason"] == "quorum not met"


async def test_http10_client_gets_unchunked_stream(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """An HTTP/1.0 client gets the raw event stream without chunk framing."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await _ticks(client, 1)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /api/price-stream?pairs=BTC-USD HTTP/1.0\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readuntil(b"\n\n")
    writer.close()
    assert b"Transfer-Encoding" not in head
    assert body.startswith(b": hello\nretry: 3000\nid: 1\nevent: price\n")


async def test_slow_reader_is_cut_off_others_keep_up(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A subscriber that stops reading is aborted past the cap; a reading one misses nothing."""
    config = sim_config(daemon_config, stream={"max_buffer_bytes": 64 * 1024})
    client = await aiohttp_client(create_app(config, fetch=False))
    hub, metrics = client.app[HUB], client.app[METRICS]
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((client.host, client.port))
    stalled.sendall(b"GET /api/price-stream?pairs=BTC-USD HTTP/1.1\r\nHost: x\r\n\r\n")
    async with client.get("/api/price-stream?pairs=BTC-USD") as good:
        await frames(good, 1)
        while hub.count < 2:
            await asyncio.sleep(0.01)
        reader = asyncio.create_task(frames(good, 20_000, timeout=30))
        peak = 0
        for i in range(1, 20_001):
            hub.publish(Tick(i, "BTC-USD", Decimal("60000.01"), 0, ("simulated",)))
            peak = max([peak, *(s.transport.get_write_buffer_size() for s in hub.subscribers())])
            if i % 50 == 0:
                await asyncio.sleep(0.001)  # a tick rate the reading client keeps up with
        got = await reader
    assert got[-1].startswith(b"id: 20000\n")
    assert [parse(f)[0] for f in got] == [str(i) for i in range(1, 20_001)]
    # The stalled one was cut off; the reading one is still attached.
    assert hub.count == 1 and hub.admitted == 1
    assert (
        metrics.registry.get_sample_value(
            "bittrade_feed_connections_closed_total", {"transport": "sse", "reason": "slow"}
        )
        == 1
    )
    # Memory is bounded by the cap (plus one frame), whatever the stalled client does.
    assert peak <= 64 * 1024 + 512
    stalled.close()


async def test_subscriber_limit_is_503_with_retry_after(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """Past max_subscribers new streams are refused with 503 and Retry-After."""
    client = await aiohttp_client(
        create_app(sim_config(daemon_config, stream={"max_subscribers": 1}), fetch=False)
    )
    async with client.get("/api/price-stream") as first:
        await frames(first, 1)
        refused = await client.get("/api/price-stream")
        assert refused.status == 503
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert "subscriber limit" in (await refused.json())["detail"]
        ws_refused = await client.get("/api/ws")
        assert ws_refused.status == 503


async def test_heartbeat_only_when_idle_and_lifetime(
    aiohttp_client: AiohttpClient, daemon_config, clock: FakeClock
) -> None:
    """One shared timer: keep-alive after 15 s of silence only, and old streams are retired."""
    config = sim_config(daemon_config, stream={"heartbeat": 15, "max_lifetime": 100})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.get("/api/price-stream?pairs=BTC-USD") as resp:
        await frames(resp, 1)
        await clock.advance(10)
        await client.app[FETCHER].run_cycle()  # activity resets the idle time
        await frames(resp, 2)  # the first price, and the "live" that ends "no price yet"
        await clock.advance(10)
        with pytest.raises(TimeoutError):  # idle 10 s: no heartbeat yet
            await frames(resp, 1, timeout=0.2)
        await clock.advance(10)
        (beat,) = await frames(resp, 1)
        assert beat == b": keep-alive\n\n"
        await clock.advance(120)  # past the 100 s (+-15% jitter) lifetime
        rest = await asyncio.wait_for(resp.content.read(), 5)
        assert resp.content.at_eof()
        assert set(rest.split(b"\n\n")) <= {b": keep-alive", b""}
    closed = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_connections_closed_total", {"transport": "sse", "reason": "lifetime"}
    )
    assert closed == 1


async def test_shutdown_closes_every_stream(aiohttp_server, daemon_config) -> None:
    """Stopping the server ends every open stream cleanly (the client sees EOF)."""
    server = await aiohttp_server(create_app(sim_config(daemon_config), fetch=False))
    async with aiohttp.ClientSession() as session:
        resps = [await session.get(server.make_url("/api/price-stream")) for _ in range(3)]
        for resp in resps:
            await frames(resp, 1)
        await server.close()
        for resp in resps:
            assert await asyncio.wait_for(resp.content.read(), 5) is not None
            assert resp.content.at_eof()
            resp.close()


async def test_websocket_events_and_resubscribe(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """WebSocket carries the same JSON events; a subscribe op changes pairs and resumes."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    await _ticks(client, 2)  # ids 1..4
    async with client.ws_connect("/api/ws?pairs=BTC-USD") as ws:
        first = await ws.receive_json(timeout=5)
        assert first == {"event": "price", "data": first["data"]} and first["data"]["id"] == 3
        assert (await ws.receive_json(timeout=5))["event"] == "status"
        await ws.send_json({"op": "subscribe", "pairs": ["ETH-USD"], "last_event_id": 1})
        replay = [await ws.receive_json(timeout=5) for _ in range(3)]
        assert [m["data"].get("id") for m in replay] == [2, 4, None]
        await ws.send_json({"op": "subscribe", "pairs": ["XRP-USD"]})
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "error" and "unknown pair 'XRP-USD'" in err["data"]["detail"]
        await ws.send_str("not json")
        assert (await ws.receive_json(timeout=5))["event"] == "error"
        await client.app[FETCHER].run_cycle()
        live = await ws.receive_json(timeout=5)
        assert live["data"]["pair"] == "ETH-USD" and live["data"]["id"] == 6


@pytest.mark.parametrize("seed", range(5))
async def test_coalescing_keeps_global_id_order_across_pairs(
    aiohttp_client: AiohttpClient, daemon_config, seed: int
) -> None:
    """With coalesce_ms, subscribers of one or both pairs get each window in id order, once."""
    rnd = random.Random(seed)
    config = sim_config(daemon_config, stream={"coalesce_ms": 50})
    client = await aiohttp_client(create_app(config, fetch=False))
    hub = client.app[HUB]
    subscriptions = ["BTC-USD", "ETH-USD", "BTC-USD,ETH-USD", "ETH-USD,BTC-USD"]
    streams = [await client.get(f"/api/price-stream?pairs={p}") for p in subscriptions]
    for resp in streams:
        await frames(resp, 1)  # retry + the statuses (no price yet)
    published: list[Tick] = []
    status_pairs: list[str] = []
    for window in range(5):
        for _ in range(rnd.randint(1, 8)):  # a random interleaving of pairs inside a window
            tick = Tick(len(published) + 1, rnd.choice(PAIRS), Decimal(window + 1), 0, ("x",))
            published.append(tick)
            hub.publish(tick)
        if rnd.random() < 0.3:
            status_pairs.append(rnd.choice(PAIRS))
            hub.publish_status(FeedStatus(status_pairs[-1], "stale", 0, "window status"))
        await asyncio.sleep(0.06)  # past the window: it flushes
    for pairs, resp in zip(subscriptions, streams, strict=True):
        want = [t.id for t in published if t.pair in pairs]
        got: list[int] = []
        async with asyncio.timeout(5):
            while len(got) < len(want):
                ident, event, _ = parse(await resp.content.readuntil(b"\n\n"))
                if event == "price":
                    got.append(int(str(ident)))
        resp.close()
        assert got == want, (pairs, got)  # every id once, strictly increasing
    sent = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_events_sent_total", {"transport": "sse"}
    )
    assert sent == sum(
        len([t for t in published if t.pair in p]) + len([s for s in status_pairs if s in p])
        for p in subscriptions
    )


async def test_coalescing_window_flushes_before_a_new_subscriber(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A subscriber joining mid-window gets the snapshot; the window goes to the others once."""
    config = sim_config(daemon_config, stream={"coalesce_ms": 200})
    client = await aiohttp_client(create_app(config, fetch=False))
    hub = client.app[HUB]
    async with client.get("/api/price-stream?pairs=BTC-USD") as first:
        await frames(first, 1)  # retry + "no price yet"
        for i in range(1, 4):
            hub.publish(Tick(i, "BTC-USD", Decimal(f"60000.0{i}"), 0, ("simulated",)))
        with pytest.raises(TimeoutError):  # still inside the window
            await frames(first, 1, timeout=0.05)
        async with client.get("/api/price-stream?pairs=BTC-USD") as second:
            # Subscribing flushes the window to `first`; `second` replays from the snapshot.
            got_first = await events(first, 3)
            got_second = await events(second, 2)
            hub.publish(Tick(4, "BTC-USD", Decimal("60000.04"), 0, ("simulated",)))
            (late_first,) = await events(first, 1, timeout=2)
            (late_second,) = await events(second, 1, timeout=2)
    assert [g[0] for g in got_first] == ["1", "2", "3"]
    assert [g[1] for g in got_second] == ["price", "status"]  # latest, status
    assert got_second[0][0] == "3"
    assert late_first[0] == late_second[0] == "4"
    sent = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_events_sent_total", {"transport": "sse"}
    )
    assert sent == 5  # three to the first subscriber, then one each


class Gated:
    """The app's real store, with resume queries held until the test opens the gate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.waiting = 0
        self.history_floor = 0

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await self.store.since_id(after, pairs, limit)


async def test_limit_holds_for_concurrent_resumes_that_query_the_store(
    aiohttp_server, daemon_config
) -> None:
    """100 resumes at once against max_subscribers 10: 10 admitted, 90 refused, 0 after."""
    config = sim_config(daemon_config, stream={"max_subscribers": 10, "replay_limit": 2})
    server = await aiohttp_server(create_app(config, fetch=False))
    await _ticks(server, 3)  # ids 1..6: a resume at 1 is below the ring, so SQLite answers
    hub = server.app[HUB]
    gated = Gated(server.app[STORE])
    hub.replay = gated
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = server.make_url("/api/price-stream")
        resps = await asyncio.gather(
            *(session.get(url, headers={"Last-Event-ID": "1"}) for _ in range(100))
        )
        assert sorted(r.status for r in resps) == [200] * 10 + [503] * 90
        admitted = [r for r in resps if r.status == 200]
        await until(lambda: gated.waiting == 10)
        assert hub.admitted == 10
        for resp in admitted[:4]:  # gone while their query is pending
            resp.close()
        await asyncio.sleep(0.05)
        gated.gate.set()
        for resp in admitted[4:]:
            ((_, event, _), *_) = await events(resp, 1)
            assert event == "resync"  # 5 missed, more than replay_limit
            resp.close()
        for resp in resps:
            resp.close()
        await until(lambda: hub.admitted == 0 and hub.count == 0)
    refused = server.app[METRICS].registry.get_sample_value(
        "bittrade_feed_connections_closed_total", {"transport": "sse", "reason": "limit"}
    )
    assert refused == 90


def _ws_client_frame(payload: bytes) -> bytes:
    """A masked text frame (key 0, so the payload reads as is), as a client must send."""
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


async def test_ws_resubscribe_flood_is_cut_off_as_slow(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """Subscribe ops that each replay from id 1, never read: cut off once past the cap."""
    config = sim_config(daemon_config, stream={"max_buffer_bytes": 4096})
    client = await aiohttp_client(create_app(config, fetch=False))
    await _ticks(client, 15)  # 15 BTC prices to replay per op, about 2.5 KiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((client.host, client.port))
    sock.sendall(
        b"GET /api/ws?pairs=BTC-USD HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    op = _ws_client_frame(b'{"op":"subscribe","pairs":["BTC-USD"],"last_event_id":1}')
    closed = client.app[METRICS].registry
    with contextlib.suppress(ConnectionError):  # reset once the server aborts us
        for _ in range(20):  # never reading a byte
            sock.sendall(op)
            await asyncio.sleep(0.01)
    await until(
        lambda: (
            closed.get_sample_value(
                "bittrade_feed_connections_closed_total", {"transport": "ws", "reason": "slow"}
            )
            == 1
        )
    )
    await until(lambda: client.app[HUB].admitted == 0)
    sock.close()


async def test_heartbeat_within_a_second_of_the_setting(
    aiohttp_client: AiohttpClient, daemon_config, clock: FakeClock
) -> None:
    """Idle for heartbeat seconds: the keep-alive comes within the next second, not later."""
    config = sim_config(daemon_config, stream={"heartbeat": 15})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.get("/api/price-stream?pairs=BTC-USD") as resp:
        await frames(resp, 1)
        for offset in (2.5, 3.3, 7.9):  # last write at odd offsets from the timer's beat
            await clock.advance(offset)
            client.app[HUB].publish_status(FeedStatus("BTC-USD", "stale", 0, "moved"))
            await frames(resp, 1)
            await clock.advance(14.9)
            with pytest.raises(TimeoutError):
                await frames(resp, 1, timeout=0.1)
            await clock.advance(1.1)  # 16 s idle at most
            (beat,) = await frames(resp, 1)
            assert beat == b": keep-alive\n\n"


async def test_resumes_are_counted_by_what_answered_them(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """A resume from the ring, one from SQLite and one past the feed each count once."""
    config = sim_config(daemon_config, stream={"replay_limit": 3})
    client = await aiohttp_client(create_app(config, fetch=False))
    await _ticks(client, 3)  # six ids: the ring keeps the last three

    async def resume(last_id: int) -> None:
        headers = {"Last-Event-ID": str(last_id)}
        async with client.get("/api/price-stream?pairs=BTC-USD", headers=headers) as r:
            await frames(r, 1)

    # Ring; SQLite (below the ring, but only two BTC-USD prices missed); ahead of the feed.
    for last_id in (5, 1, 99):
        await resume(last_id)
    metrics = client.app[METRICS]
    counts = {
        source: metrics.registry.get_sample_value("bittrade_feed_resumes_total", {"source": source})
        for source in ("ring", "sqlite", "resync")
    }
    assert counts == {"ring": 1.0, "sqlite": 1.0, "resync": 1.0}
