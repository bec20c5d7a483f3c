"""SIGHUP reloads the config of a running daemon without dropping a single subscriber."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import unused_port

from tests.childdaemon import (
    START_TIMEOUT,
    Daemon,
    NotifySocket,
    config_dict,
    run_daemon,
    write_config,
)
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges, with_price


async def prices(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The ``price`` events of an open SSE response, as JSON."""
    while True:
        frame = (await resp.content.readuntil(b"\n\n")).decode()
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if fields.get("event") == "price":
            yield json.loads(fields["data"])


async def next_price(stream: AsyncIterator[dict[str, Any]], timeout: float = 5.0) -> dict[str, Any]:
    """The next price event, within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await anext(stream)


async def reload(daemon: Daemon, notify: NotifySocket) -> str:
    """SIGHUP, then wait for the READY=1 that ends the reload; its STATUS."""
    start = len(notify.notes)
    daemon.signal(signal.SIGHUP)
    reloading = await notify.expect("RELOADING=1", after=start)
    ready = await notify.expect("READY=1", after=reloading + 1)
    return notify.notes[ready].fields["STATUS"]


async def test_subscribers_keep_streaming_across_a_reload(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """Streams opened before SIGHUP stay open and their next ticks come from the new sources."""
    port = unused_port()
    raw = config_dict(tmp_path, fx, port, sources=("kraken",))
    config = write_config(tmp_path / "c.toml", raw)
    fx.answer("kraken-mirror", body=with_price("kraken", "80000.5"))
    notify = NotifySocket()
    env = {"NOTIFY_SOCKET": notify.address}
    async with (
        notify,
        run_daemon(config, tmp_path, port=port, env=env) as daemon,
        aiohttp.ClientSession() as session,
    ):
        await notify.expect("READY=1", timeout=START_TIMEOUT)
        async with (
            session.get(daemon.url + "/api/price-stream") as first,
            session.get(daemon.url + f"/api/price-stream?pairs={PAIR}") as second,
        ):
            streams = [prices(first), prices(second)]
            before = [await next_price(s) for s in streams]
            assert {p["price"] for p in before} == {"73380.6"}
            # A new source URL (reloadable) and a new port (needs a restart).
            raw["exchanges"]["kraken"]["base_url"] = fx.url("kraken-mirror")
            raw["server"]["port"] = unused_port()
            write_config(config, raw)
            status = await reload(daemon, notify)
            assert not status.startswith("reload failed"), status
            for stream, last in zip(streams, before, strict=True):
                seen = [last]
                while seen[-1]["price"] != "80000.5":
                    seen.append(await next_price(stream))
                assert len(seen) <= 4, "the new source took more than two intervals"
                ids = [p["id"] for p in seen]
                assert ids == sorted(ids)
                assert len(set(ids)) == len(ids)
            status_code, metrics = await daemon.get("/metrics")
    assert status_code == 200
    assert 'bittrade_feed_connections_closed_total{reason="client",transport="sse"} 0.0' in (
        metrics
    )
    assert 'bittrade_feed_subscribers{transport="sse"} 2.0' in metrics
    assert fx.requests["kraken-mirror"] >= 1
    events = daemon.events()
    (restart,) = [e for e in events if e["event"].startswith("changed settings need a restart")]
    assert restart["keys"] == ["server.port"]
    assert any(e["event"] == "config reloaded" for e in events)


async def test_bad_config_on_reload_changes_nothing(tmp_path: Path, fx: FakeExchanges) -> None:
    """A reload with a bad key is refused: the old sources keep being asked, streams go on."""
    port = unused_port()
    raw = config_dict(tmp_path, fx, port, sources=("kraken",))
    config = write_config(tmp_path / "c.toml", raw)
    fx.answer("kraken-mirror", body=with_price("kraken", "80000.5"))
    notify = NotifySocket()
    env = {"NOTIFY_SOCKET": notify.address}
    async with notify, run_daemon(config, tmp_path, port=port, env=env) as daemon:
        await notify.expect("READY=1", timeout=START_TIMEOUT)
        async with (
            aiohttp.ClientSession() as session,
            session.get(daemon.url + "/api/price-stream") as resp,
        ):
            stream = prices(resp)
            await next_price(stream)
            raw["exchanges"]["kraken"]["base_url"] = fx.url("kraken-mirror")
            raw["feed"]["interval"] = "fast"
            write_config(config, raw)
            status = await reload(daemon, notify)
            asked = fx.requests["kraken"]
            after = [await next_price(stream) for _ in range(3)]
    assert status == "reload failed: feed.interval: must be a number, not a string"
    assert [p["price"] for p in after] == ["73380.6"] * 3
    assert fx.requests["kraken"] >= asked + 2
    assert fx.requests["kraken-mirror"] == 0
    (refused,) = [e for e in daemon.events() if e["event"].startswith("reload refused")]
    assert refused["reason"] == "feed.interval: must be a number, not a string"
    assert refused["level"] == "error"
