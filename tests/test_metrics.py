"""Every metric after a scripted run against fake exchanges, and the exposition's lint."""

from __future__ import annotations

import asyncio
import contextlib
import platform
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from decimal import Decimal

import pytest
from aiohttp.pytest_plugin import AiohttpClient
from prometheus_client import CollectorRegistry

from bittrade_feed import __version__
from bittrade_feed.config import Config
from bittrade_feed.models import Tick
from bittrade_feed.ops.metrics import new_registry
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB
from tests.daemon import PAIR
from tests.fakeclock import FakeClock
from tests.fakeexchange import FakeExchanges


def sampler(registry: CollectorRegistry) -> Callable[..., float | None]:
    """``value("name", label="x")``: one sample of the registry."""

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    return value


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def promtool_check(exposition: str) -> None:
    """Fail unless ``promtool check metrics`` accepts the exposition without a complaint."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: install the Debian package 'prometheus' "
            "(scripts/ops-checks.sh installs it in CI before the tests run)"
        )
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", done.stdout


async def test_scripted_run_sets_every_metric(
    aiohttp_client: AiohttpClient,
    daemon_config: Callable[..., Config],
    fx: FakeExchanges,
    clock: FakeClock,
) -> None:
    """Seven cycles with 500, HTML, 429, garbage, outliers and a refused write: exact values."""
    config = daemon_config(aggregation={"quorum": 1}, feed={"stale_after": 2.0})
    registry = new_registry()
    client = await aiohttp_client(create_app(config, clock=clock, registry=registry, fetch=False))
    fetcher, hub = client.app[FETCHER], client.app[HUB]
    value = sampler(registry)
    sse = await client.get("/api/price-stream")
    ws = await client.ws_connect("/api/ws")
    await until(lambda: hub.count == 2)

    # 1: both answer.
    await fetcher.run_cycle()
    # 2: kraken 500, bitfinex an HTML error page with status 200: no quorum.
    await clock.advance(1)
    fx.answer("kraken", status=500, raw=b"oops", headers={"Content-Type": "text/plain"})
    fx.answer("bitfinex", raw=b"<html>Cloudflare</html>")
    await fetcher.run_cycle()
    # 3: kraken 429 with Retry-After (rests it), bitfinex garbage JSON: stale (2 s old).
    await clock.advance(1)
    fx.answer("kraken", status=429, raw=b"slow down", headers={"Retry-After": "30"})
    fx.answer("bitfinex", raw=b"[1,2", headers={"Content-Type": "application/json"})
    await fetcher.run_cycle()
    assert value("bittrade_feed_stale", pair=PAIR) == 1
    assert value("bittrade_feed_source_circuit_state", source="kraken", state="open") == 1
    assert value("bittrade_feed_source_circuit_state", source="kraken", state="closed") == 0
    # 4: kraken is resting and not asked; bitfinex alone publishes: live again.
    await clock.advance(1)
    fx.price("kraken", "73380.6")
    fx.price("bitfinex", "73350")
    await fetcher.run_cycle()
    assert value("bittrade_feed_stale", pair=PAIR) == 0
    # 5: the rest is over; kraken's probe succeeds.
    await clock.advance(31)
    await fetcher.run_cycle()
    published_at = clock.time()
    # 6: kraken 9 % off: with two quotes the median sits between them, both are outliers.
    await clock.advance(1)
    fx.price("kraken", "80000")
    await fetcher.run_cycle()
    # 7: both agree, but the database refuses the write: 2 s without a price, stale again.
    await clock.advance(1)
    fx.price("kraken", "73380.6")
    with contextlib.closing(sqlite3.connect(config.database.path)) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON ticks BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    await fetcher.run_cycle()
    last_success = clock.time()

    requests = "bittrade_feed_upstream_requests_total"
    expected = {
        ("kraken", "ok"): 4,
        ("kraken", "unavailable"): 1,
        ("kraken", "rate_limited"): 1,
        ("bitfinex", "ok"): 5,
        ("bitfinex", "bad_body"): 2,
    }
    for source in ("kraken", "bitfinex"):
        for outcome in ("ok", "timeout", "unavailable", "http_error", "rate_limited", "bad_body"):
            got = value(requests, source=source, outcome=outcome)
            assert got == expected.get((source, outcome), 0), (source, outcome)
        assert value("bittrade_feed_outliers_total", source=source) == 1
        assert value("bittrade_feed_source_last_success_timestamp_seconds", source=source) == (
            last_success
        )
        assert value("bittrade_feed_source_circuit_state", source=source, state="closed") == 1
    duration = "bittrade_feed_upstream_request_duration_seconds_count"
    assert value(duration, source="kraken") == 6
    assert value(duration, source="bitfinex") == 7
    assert value("bittrade_feed_ticks_total", pair=PAIR) == 3
    assert value("bittrade_feed_ticks_skipped_total", pair=PAIR, reason="no_quorum") == 3
    assert value("bittrade_feed_ticks_skipped_total", pair=PAIR, reason="store_error") == 1
    assert value("bittrade_feed_last_tick_timestamp_seconds", pair=PAIR) == pytest.approx(
        published_at, abs=0.001
    )
    assert value("bittrade_feed_last_price", pair=PAIR) == 73365.3
    assert value("bittrade_feed_stale", pair=PAIR) == 1
    assert value("bittrade_feed_store_write_duration_seconds_count") == 4
    assert value("bittrade_feed_store_write_errors_total") == 1
    # Three prices and four status changes (live on the first price, stale, live, stale)
    # reached both subscribers.
    for transport in ("sse", "ws"):
        assert value("bittrade_feed_subscribers", transport=transport) == 1
        assert value("bittrade_feed_connections_opened_total", transport=transport) == 1
        assert value("bittrade_feed_events_sent_total", transport=transport) == 7
        assert value("bittrade_feed_sent_bytes_total", transport=transport) > 0
    assert value("bittrade_feed_broadcast_duration_seconds_count") == 7
    build = {"version": __version__, "python_version": platform.python_version()}
    assert value("bittrade_feed_build_info", **build) == 1
    assert value("process_cpu_seconds_total") is not None
    assert value("python_info", **_python_info()) == 1

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    exposition = await resp.text()
    assert value("bittrade_feed_store_rows") == 3
    with contextlib.closing(sqlite3.connect(config.database.path)) as db:
        ((pages,),) = db.execute("PRAGMA page_count")
        ((size,),) = db.execute("PRAGMA page_size")
    assert value("bittrade_feed_store_size_bytes") == pages * size
    promtool_check(exposition)

    sse.close()
    await ws.close()
    await until(lambda: hub.count == 0)
    for transport in ("sse", "ws"):
        assert value("bittrade_feed_subscribers", transport=transport) == 0
        closed = "bittrade_feed_connections_closed_total"
        assert value(closed, transport=transport, reason="client") == 1
        assert value(closed, transport=transport, reason="slow") == 0


async def test_no_timestamp_or_price_sample_before_there_is_one(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], fx: FakeExchanges
) -> None:
    """Before the first price: no 0 (1970) timestamp and no 0 price, for pairs and sources."""
    registry = new_registry()
    client = await aiohttp_client(create_app(daemon_config(), registry=registry, fetch=False))
    value = sampler(registry)
    never = (
        ("bittrade_feed_last_tick_timestamp_seconds", {"pair": PAIR}),
        ("bittrade_feed_last_price", {"pair": PAIR}),
        ("bittrade_feed_source_last_success_timestamp_seconds", {"source": "kraken"}),
    )
    fx.answer("kraken", status=500)
    fx.answer("bitfinex", status=500)
    await client.app[FETCHER].run_cycle()
    exposition = await (await client.get("/metrics")).text()
    for name, labels in never:
        assert value(name, **labels) is None, name
        assert f"\n{name}{{" not in exposition, name
    assert value("bittrade_feed_ticks_total", pair=PAIR) == 0, "counters are still declared"
    promtool_check(exposition)
    fx.price("kraken", "73380.6")
    fx.price("bitfinex", "73350")
    await client.app[FETCHER].run_cycle()
    for name, labels in never:
        assert (value(name, **labels) or 0) > 0, name


async def test_slow_subscriber_is_counted_as_slow(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], fx: FakeExchanges
) -> None:
    """A subscriber that stops reading is dropped as ``slow``; one that reads stays."""
    config = daemon_config(stream={"max_buffer_bytes": 4096})
    registry = new_registry()
    client = await aiohttp_client(create_app(config, registry=registry, fetch=False))
    hub = client.app[HUB]
    value = sampler(registry)
    reader = await client.get("/api/price-stream")
    host, port = client.server.host, client.server.port
    # A small receive buffer, and it never reads: the daemon's unsent bytes pile up.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /api/price-stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    await until(lambda: hub.count == 2)
    slow = "bittrade_feed_connections_closed_total"
    base = hub.max_id
    async with asyncio.timeout(20):
        for i in range(1, 200_000):
            hub.publish(Tick(base + i, PAIR, Decimal("73365.3"), 1_763_900_000_000 + i, ("x",)))
            if i % 50 == 0:
                await reader.content.read(1 << 20)  # the good subscriber keeps up
                if value(slow, transport="sse", reason="slow") == 1:
                    break
    assert value(slow, transport="sse", reason="slow") == 1
    assert value("bittrade_feed_subscribers", transport="sse") == 1
    assert hub.count == 1
    writer.close()
    reader.close()


def _python_info() -> dict[str, str]:
    major, minor, patch = platform.python_version_tuple()
    return {
        "implementation": platform.python_implementation(),
        "major": major,
        "minor": minor,
        "patchlevel": patch,
        "version": platform.python_version(),
    }
