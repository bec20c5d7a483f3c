"""Admission limits (issue 13): per address, per credential, new streams per address.

Unit tests of ``Registry.admit``; a hypothesis property for the token bucket on an
injected clock; seeded concurrent schedules, in process and over HTTP, that prove the
counts never pass a cap and return to zero on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.broadcast.limits import ConnectRate, Limited, TokenBucket, address_group
from bittrade_feed.broadcast.registry import Full, Registry, Slot
from bittrade_feed.config import Config, StreamConfig
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import HUB, METRICS
from tests.authutil import make_key
from tests.fakeclock import FakeClock
from tests.streamutil import frames
from tests.test_auth_http import auth_config, bearer
from tests.test_metrics import until
from tests.test_streams import sim_config


class Clock:
    """A settable monotonic clock for the registry alone."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registry(clock: Callable[[], float] | None = None, **stream: Any) -> Registry:
    return Registry(replace(StreamConfig(), **stream), clock or Clock())


# -- address groups -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_address_groups(address: str, group: str) -> None:
    """IPv4 whole, IPv6 by /64, IPv4-mapped unwrapped; anything else is its own group."""
    assert address_group(address) == group


# -- per address and per credential ---------------------------------------------------


def test_the_21st_stream_from_one_address_is_refused_until_one_closes() -> None:
    """20 per address by default; the 21st is Limited("address"); a release frees one."""
    reg = registry()
    slots = [reg.admit("192.0.2.1") for _ in range(20)]
    with pytest.raises(Limited) as refused:
        reg.admit("192.0.2.1")
    assert refused.value.limit == "address"
    assert "20 streams already open from 192.0.2.1 (stream.max_per_address)" in (
        refused.value.detail
    )
    assert 2 <= refused.value.retry_after <= 10
    other = reg.admit("192.0.2.2")  # another address is not affected
    reg.release(slots[0])
    reg.release(slots[0])  # idempotent: frees one place, not two
    again = reg.admit("192.0.2.1")
    with pytest.raises(Limited):
        reg.admit("192.0.2.1")
    for slot in [*slots, other, again]:
        reg.release(slot)
    assert (reg.admitted, reg.by_address, reg.by_credential) == (0, {}, {})


def test_one_ipv6_64_is_one_address() -> None:
    """Hosts of one /64 share the per-address count; a mapped IPv4 counts as that IPv4."""
    reg = registry(max_per_address=2)
    reg.admit("2001:db8::1")
    reg.admit("2001:db8::ffff:2")
    with pytest.raises(Limited):
        reg.admit("2001:db8::3")
    reg.admit("2001:db8:0:1::1")  # the next /64
    reg.admit("192.0.2.9")
    reg.admit("::ffff:192.0.2.9")
    with pytest.raises(Limited):
        reg.admit("192.0.2.9")


def test_per_credential_limit_and_anonymous_is_unlimited() -> None:
    """Streams of one credential are capped across addresses; "" is never counted."""
    reg = registry(max_per_credential=2, max_per_address=0)
    a = reg.admit("192.0.2.1", "key:a")
    reg.admit("192.0.2.2", "key:a")
    with pytest.raises(Limited) as refused:
        reg.admit("192.0.2.3", "key:a")
    assert refused.value.limit == "credential"
    assert "key:a" not in refused.value.detail  # never the credential itself
    assert "stream.max_per_credential" in refused.value.detail
    reg.admit("192.0.2.3", "key:b")
    for _ in range(10):
        reg.admit("192.0.2.4", "")
    reg.release(a)
    reg.admit("192.0.2.3", "key:a")


def test_global_cap_comes_first_and_spends_no_token() -> None:
    """Full (503) before any per-address check; a refused-as-full attempt keeps its token."""
    reg = registry(max_subscribers=1, connect_burst=2, connect_per_second=1)
    slot = reg.admit("192.0.2.1")
    for _ in range(5):
        with pytest.raises(Full):
            reg.admit("192.0.2.1")
    reg.release(slot)
    reg.admit("192.0.2.1")  # the second token is still there


def test_limits_off_at_zero() -> None:
    """0 turns the per-address, credential and rate limits off."""
    reg = registry(max_per_address=0, max_per_credential=0, connect_burst=0)
    for _ in range(500):
        reg.admit("192.0.2.1", "key:a")
    assert reg.rates is None
    assert reg.by_address["192.0.2.1"] == 500


def test_rate_refusal_says_when_to_retry() -> None:
    """Past the burst: Limited("rate") with the seconds until the next token, both keys named."""
    clock = Clock()
    reg = registry(clock, connect_burst=3, connect_per_second=0.25, max_per_address=0)
    for _ in range(3):
        reg.admit("192.0.2.1")
    with pytest.raises(Limited) as refused:
        reg.admit("192.0.2.1")
    assert refused.value.limit == "rate"
    assert refused.value.retry_after == 4
    assert "(stream.connect_burst, stream.connect_per_second)" in refused.value.detail
    clock.now += 4
    reg.admit("192.0.2.1")


# -- the token bucket -------------------------------------------------------------------

attempts = st.lists(
    st.tuples(st.floats(0, 3, allow_nan=False), st.sampled_from(["192.0.2.1", "192.0.2.2"])),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(1, 10),
    rate=st.floats(0.1, 20, allow_nan=False),
    schedule=attempts,
)
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_t(
    burst: int, rate: float, schedule: list[tuple[float, str]]
) -> None:
    """In any window [t0, t1] one address is admitted at most burst + rate * (t1 - t0)."""
    clock = Clock()
    reg = registry(clock, connect_burst=burst, connect_per_second=rate, max_per_address=0)
    admitted: dict[str, list[float]] = {}
    refusals: list[tuple[str, int]] = []
    for gap, address in schedule:
        clock.now += gap
        try:
            slot = reg.admit(address)
        except Limited as refused:
            refusals.append((refused.limit, refused.retry_after))
            continue
        reg.release(slot)
        admitted.setdefault(address, []).append(clock.now)
    assert all(limit == "rate" and wait >= 1 for limit, wait in refusals)
    for times in admitted.values():
        for i, start in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + rate * (times[j] - start) + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(1, 5),
    rate=st.floats(0.5, 5, allow_nan=False),
    schedule=st.lists(
        st.tuples(st.floats(0, 2, allow_nan=False), st.integers(0, 30)), max_size=200
    ),
)
def test_evicting_full_buckets_changes_no_decision_and_bounds_memory(
    burst: int, rate: float, schedule: list[tuple[float, int]]
) -> None:
    """The sweep drops only buckets that are full again: every decision is the one of a
    bucket kept forever, and after a sweep only recently used groups remain."""
    clock = Clock()
    swept = ConnectRate(burst, rate, clock)
    forever: dict[str, TokenBucket] = {}
    last_take: dict[str, float] = {}
    for gap, host in schedule:
        clock.now += gap
        group = f"192.0.2.{host}"
        reference = forever.setdefault(group, TokenBucket(burst, rate, clock)).take()
        assert (swept.take(group) == 0) == reference
        last_take[group] = clock.now
        recent = {g for g, t in last_take.items() if clock.now - t < 2 * swept.period + 1e-9}
        assert set(swept.buckets) <= recent


# -- seeded concurrent schedules, in process ----------------------------------------------


class Crash(Exception):
    """Injected: a stream that fails while it is served."""


@pytest.mark.parametrize("seed", range(40))
async def test_counts_never_pass_a_cap_and_return_to_zero(seed: int) -> None:
    """Hundreds of admissions with random addresses, credentials, lifetimes, crashes and
    cancellations: no count ever passes its cap, and all are back at zero at the end."""
    rng = random.Random(seed)
    config = replace(
        StreamConfig(),
        max_subscribers=rng.randint(3, 30),
        max_per_address=rng.randint(1, 6),
        max_per_credential=rng.randint(1, 6),
        connect_burst=rng.randint(0, 8),
        connect_per_second=rng.uniform(1, 50),
    )
    reg = Registry(config, asyncio.get_running_loop().time)

    def check() -> None:
        assert 0 <= reg.admitted <= config.max_subscribers
        assert all(0 < n <= config.max_per_address for n in reg.by_address.values())
        assert all(0 < n <= config.max_per_credential for n in reg.by_credential.values())
        assert sum(reg.by_address.values()) == reg.admitted

    async def stream() -> None:
        address = f"2001:db8:{rng.randint(0, 3)}::{rng.randint(1, 9)}"
        if rng.random() < 0.5:
            address = f"192.0.2.{rng.randint(1, 4)}"
        credential = rng.choice(["", "key:a", "key:b"])
        await asyncio.sleep(rng.uniform(0, 0.005))
        try:
            slot = reg.admit(address, credential)
        except (Full, Limited):
            check()
            return
        check()
        try:
            await asyncio.sleep(rng.uniform(0, 0.01))
            if rng.random() < 0.2:
                raise Crash
        finally:
            reg.release(slot)
            if rng.random() < 0.3:
                reg.release(slot)  # a second exit path releasing again
            check()

    tasks = [asyncio.create_task(stream()) for _ in range(200)]
    await asyncio.sleep(rng.uniform(0, 0.008))
    for task in rng.sample(tasks, 30):
        task.cancel()  # the client went away: the handler is cancelled mid-stream
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(r is None or isinstance(r, (Crash, asyncio.CancelledError)) for r in results)
    assert (reg.admitted, reg.by_address, reg.by_credential) == (0, {}, {})


# -- over HTTP ---------------------------------------------------------------------------


async def test_the_21st_sse_stream_gets_429_and_a_close_frees_one(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """Default limits: 20 streams from 127.0.0.1, the 21st (SSE or WS) gets 429 naming the
    limit, counted and logged; closing one lets the next in."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(client.get("/api/price-stream")) for _ in range(20)
        ]
        for resp in streams:
            assert resp.status == 200
        refused = await client.get("/api/price-stream")
        assert refused.status == 429
        assert 2 <= int(refused.headers["Retry-After"]) <= 10
        body = await refused.json()
        assert body["limit"] == "address"
        assert body["detail"] == "20 streams already open from 127.0.0.1 (stream.max_per_address)"
        assert (await client.get("/api/ws")).status == 429
        streams[0].close()
        await until(lambda: client.app[HUB].admitted == 19)
        async with client.get("/api/price-stream") as again:
            assert again.status == 200
            await frames(again, 1)
    refusals = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_refusals_total", {"reason": "address"}
    )
    assert refusals == 2
    await until(lambda: client.app[HUB].admitted == 0)


async def test_rate_limit_over_http_with_retry_after(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """A burst of 3 then 1 per second: the 4th new stream at once gets 429 rate, Retry-After 1."""
    config = sim_config(daemon_config, stream={"connect_burst": 3, "connect_per_second": 1})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    for _ in range(3):
        async with client.get("/api/price-stream") as resp:
            assert resp.status == 200
    refused = await client.get("/api/price-stream")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert (await refused.json())["limit"] == "rate"
    clock.jump(1.0)
    async with client.get("/api/price-stream") as resp:
        assert resp.status == 200
    assert (
        client.app[METRICS].registry.get_sample_value(
            "bittrade_feed_refusals_total", {"reason": "rate"}
        )
        == 1
    )


async def test_global_cap_is_counted_as_a_global_refusal(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """503 past stream.max_subscribers, with limit "global" and refusals{reason="global"}."""
    config = sim_config(daemon_config, stream={"max_subscribers": 1})
    client = await aiohttp_client(create_app(config, fetch=False))
    async with client.get("/api/price-stream") as first:
        await frames(first, 1)
        refused = await client.get("/api/price-stream")
        assert refused.status == 503
        assert (await refused.json())["limit"] == "global"
    value = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_refusals_total", {"reason": "global"}
    )
    assert value == 1


async def _raw_handshake_then_drop(port: int, source: str, path: str) -> None:
    """Open a TCP connection from ``source``, send half a request or a whole one, vanish."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    finally:
        sock.close()


@pytest.mark.parametrize("seed", range(8))
async def test_http_exit_paths_return_every_count_to_zero(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], seed: int
) -> None:
    """Clients from 4 addresses that read and close, drop mid-handshake, use WebSocket, are
    closed by the hub, or hit an injected exception: per-address counts never pass the cap
    (checked at every admission) and are all zero once the clients are gone."""
    rng = random.Random(seed)
    cap = rng.randint(2, 4)
    config = sim_config(
        daemon_config, stream={"max_per_address": cap, "max_subscribers": 10, "connect_burst": 0}
    )
    client = await aiohttp_client(create_app(config, fetch=False))
    hub: Hub = client.app[HUB]
    registry_ = hub._subs
    real_admit, real_subscribe = registry_.admit, hub.subscribe
    peaks: list[int] = []

    def admit(address: str = "", credential: str = "") -> Slot:
        slot = real_admit(address, credential)
        assert registry_.admitted <= 10
        assert all(n <= cap for n in registry_.by_address.values())
        peaks.append(max(registry_.by_address.values()))
        return slot

    async def subscribe(*args: Any, **kwargs: Any) -> Any:
        if rng.random() < 0.15:
            raise Crash("injected failure while opening the stream")
        return await real_subscribe(*args, **kwargs)

    registry_.admit = admit  # type: ignore[method-assign]
    hub.subscribe = subscribe  # type: ignore[method-assign]
    port = client.port
    assert port is not None
    sources = [f"127.0.0.{n}" for n in range(2, 6)]

    async def one() -> None:
        source = rng.choice(sources)
        path = rng.choice(["/api/price-stream", "/api/ws", "/api/price-stream?pairs=BTC-USD"])
        await asyncio.sleep(rng.uniform(0, 0.05))
        kind = rng.choice(["read", "drop", "ws", "hold"])
        if kind == "drop":
            await _raw_handshake_then_drop(port, source, path)
            return
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"http://127.0.0.1:{port}/api/"
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                if kind == "ws":
                    async with session.ws_connect(url + "ws") as ws:
                        await ws.receive(timeout=2)
                    return
                async with session.get(url + "price-stream") as resp:
                    if resp.status != 200:
                        return
                    if kind == "hold":  # until the hub closes every stream
                        async with asyncio.timeout(5):
                            await resp.read()
                    else:
                        await resp.content.readany()

    tasks = [asyncio.create_task(one()) for _ in range(40)]
    await asyncio.sleep(rng.uniform(0.05, 0.3))
    hub.close_all("shutdown")
    await asyncio.gather(*tasks)
    hub.close_all("shutdown")  # streams admitted after the first close
    await until(lambda: hub.admitted == 0)
    assert (registry_.by_address, registry_.by_credential) == ({}, {})
    assert peaks, "no stream was admitted"


async def test_refusals_are_logged_at_most_ten_a_minute(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """Every refusal is counted, but a client hammering a limit writes 10 lines a minute;
    the next line after the minute says how many were held back."""
    config = sim_config(daemon_config, stream={"max_subscribers": 1})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.get("/api/price-stream") as first:
        await frames(first, 1)
        with capture_logs() as logs:
            for _ in range(25):
                assert (await client.get("/api/price-stream")).status == 503
            clock.jump(61)
            assert (await client.get("/api/price-stream")).status == 503
    lines = [e for e in logs if e["event"] == "request refused"]
    assert len(lines) == 11
    assert {e["refusal"] for e in lines} == {"global"}
    assert lines[0]["peer"] == "127.0.0.1"
    assert lines[0]["path"] == "/api/price-stream"
    assert lines[-1]["held_back"] == 15
    value = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_refusals_total", {"reason": "global"}
    )
    assert value == 26


async def test_per_credential_limit_over_http(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], tmp_path: Path
) -> None:
    """With auth on, one key holds at most stream.max_per_credential streams from any
    addresses (429 credential); another key is not affected."""
    key_a, rec_a = make_key("pairs:*")
    key_b, rec_b = make_key("pairs:*")
    config = auth_config(daemon_config, tmp_path, rec_a, rec_b, stream={"max_per_credential": 2})
    client = await aiohttp_client(create_app(config, fetch=False))
    async with contextlib.AsyncExitStack() as stack:
        for key in (key_a, key_a, key_b):
            resp = await stack.enter_async_context(
                client.get("/api/price-stream", headers=bearer(key))
            )
            assert resp.status == 200
        refused = await client.get("/api/ws", headers=bearer(key_a))
        assert refused.status == 429
        body = await refused.json()
        assert body["limit"] == "credential"
        assert key_a not in body["detail"]
        assert rec_a.id not in body["detail"]
    await until(lambda: client.app[HUB].admitted == 0)
    assert client.app[HUB]._subs.by_credential == {}
