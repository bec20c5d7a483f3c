"""SIGHUP reloads the config of a running daemon without dropping a single subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import unused_port

from bittrade_feed.broadcast.wire import WireFormat
from bittrade_feed.cli import _Daemon
from bittrade_feed.config import load_config
from bittrade_feed.models import TickDraft
from bittrade_feed.server.app import create_app
from bittrade_feed.server.reload import reload_config
from bittrade_feed.server.state import HUB, current_config
from bittrade_feed.store.sqlite import Store
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
from tests.streamutil import RecordingTransport


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


@contextlib.asynccontextmanager
async def ready_daemon(
    tmp_path: Path, raw: dict[str, Any], port: int, **env: str
) -> AsyncIterator[tuple[Daemon, NotifySocket, aiohttp.ClientSession, Path]]:
    """A child daemon on ``raw`` (written to a file), after its READY=1; and a session."""
    config = write_config(tmp_path / "c.toml", raw)
    notify = NotifySocket()
    async with (
        notify,
        run_daemon(config, tmp_path, port=port, env={"NOTIFY_SOCKET": notify.address, **env}) as d,
        aiohttp.ClientSession() as session,
    ):
        await notify.expect("READY=1", timeout=START_TIMEOUT)
        yield d, notify, session, config


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


OTHER = "ETH-USD"
"""A second pair; the fake Kraken answers for BTC, so it never gets a fresh price here."""


def _two_pairs(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """``raw`` with ``pairs`` configured, every one of them asking Kraken."""
    raw["feed"]["pairs"] = pairs
    raw["feed"]["sources"] = {pair: ["kraken"] for pair in pairs}
    return raw


async def test_shorter_interval_applies_at_once_and_the_watchdog_keeps_pinging(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """120 s -> 0.5 s on SIGHUP: the sleeping loop wakes, ticks every 0.5 s, WATCHDOG=1 goes on.

    Before, the loop slept out the old 120 s while the stall check already used the new
    0.5 s window, so the pings stopped about a second after the reload.
    """
    port = unused_port()
    raw = config_dict(tmp_path, fx, port, sources=("kraken",))
    raw["feed"]["interval"] = 120.0
    async with (
        ready_daemon(tmp_path, raw, port, WATCHDOG_USEC="400000") as (
            daemon,
            notify,
            session,
            config,
        ),
        session.get(daemon.url + "/api/price-stream") as resp,
    ):
        stream = prices(resp)
        first = await next_price(stream)
        raw["feed"]["interval"] = 0.5
        write_config(config, raw)
        status = await reload(daemon, notify)
        assert not status.startswith("reload failed"), status
        reloaded = len(notify.notes)
        # Three new prices, each well within 120 s: the long sleep was cut short.
        later = [await next_price(stream, timeout=10.0) for _ in range(3)]
        await asyncio.sleep(1.0)  # the old code had stopped pinging well before this
        pings = [n.at for n in notify.notes[reloaded:] if n.has("WATCHDOG=1")]
    assert [p["id"] for p in later] == [first["id"] + 1, first["id"] + 2, first["id"] + 3]
    assert len(pings) >= 8
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.4
    assert not any(e["event"].startswith("fetch loop stalled") for e in daemon.events())


async def test_removed_pair_tells_its_streams_and_closes_those_left_with_none(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A stream of only the removed pair gets a last status and ends; one with more goes on."""
    port = unused_port()
    raw = _two_pairs(config_dict(tmp_path, fx, port, sources=("kraken",)), [PAIR, OTHER])
    async with (
        ready_daemon(tmp_path, raw, port) as (daemon, notify, session, config),
        session.get(daemon.url + f"/api/price-stream?pairs={OTHER}") as only,
        session.get(daemon.url + f"/api/price-stream?pairs={PAIR},{OTHER}") as both,
    ):
        await only.content.readuntil(b"\n\n")  # retry + the opening status
        assert (await daemon.get(f"/api/price?pair={OTHER}"))[0] == 503  # no price yet
        write_config(config, _two_pairs(raw, [PAIR]))
        status = await reload(daemon, notify)
        assert not status.startswith("reload failed"), status
        async with asyncio.timeout(5):
            rest = (await only.content.read()).decode()  # to the end: it was closed
        last_only = _statuses(rest)[-1]
        async with asyncio.timeout(5):
            while True:
                frame = (await both.content.readuntil(b"\n\n")).decode()
                if f'"pair":"{OTHER}"' in frame and "removed" in frame:
                    break
        still = await next_price(prices(both))
        code, body = await daemon.get(f"/api/price?pair={OTHER}")
        _, metrics = await daemon.get("/metrics")
    reason = f"pair {OTHER} removed from the configuration"
    assert (last_only["pair"], last_only["state"], last_only["reason"]) == (OTHER, "stale", reason)
    assert still["pair"] == PAIR
    assert code == 400
    assert f"unknown pair '{OTHER}'" in json.loads(body)["detail"]
    assert 'bittrade_feed_connections_closed_total{reason="removed",transport="sse"} 1.0' in (
        metrics
    )


def _statuses(text: str) -> list[dict[str, Any]]:
    """The data of every ``status`` event in an SSE body."""
    found = []
    for frame in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if fields.get("event") == "status":
            found.append(json.loads(fields["data"]))
    return found


async def test_added_pair_starts_from_its_stored_price_and_status(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A pair added on SIGHUP has its stored price on /api/price and in the stream snapshot."""
    db = tmp_path / "feed.sqlite3"
    async with await Store.open(db) as store:
        stored = await store.insert(
            TickDraft(OTHER, Decimal("2512.5"), round(time.time() * 1000) - 2000, ("kraken",))
        )
    port = unused_port()
    raw = config_dict(tmp_path, fx, port, sources=("kraken",))
    async with ready_daemon(tmp_path, raw, port) as (daemon, notify, session, config):
        assert (await daemon.get(f"/api/price?pair={OTHER}"))[0] == 400
        write_config(config, _two_pairs(raw, [PAIR, OTHER]))
        status = await reload(daemon, notify)
        assert not status.startswith("reload failed"), status
        code, body = await daemon.get(f"/api/price?pair={OTHER}")
        async with session.get(daemon.url + f"/api/price-stream?pairs={OTHER}") as resp:
            opening = [(await resp.content.readuntil(b"\n\n")).decode() for _ in range(2)]
    price = json.loads(body)
    assert code == 200
    assert (price["id"], price["price"], price["stale"]) == (stored.id, "2512.5", False)
    assert 2.0 <= price["age_seconds"] < 10.0
    assert opening[0].startswith(f": hello\nretry: 3000\nid: {stored.id}\nevent: price\n")
    (first_status,) = _statuses(opening[1])
    assert (first_status["state"], first_status["reason"]) == (
        "live",
        "latest price from the database",
    )


async def test_overlapping_reloads_apply_a_pair_change_once(
    tmp_path: Path, fx: FakeExchanges, aiohttp_client: AiohttpClient
) -> None:
    """Two SIGHUPs in a row while the first awaits the store: the second sees its result.

    Each reload reads the stored prices of the pairs it adds before changing anything; run
    at once without serialising, both would add the pair and announce it twice.
    """
    raw = config_dict(tmp_path, fx, unused_port(), sources=("kraken",))
    path = write_config(tmp_path / "c.toml", raw)
    config = load_config(path)
    client = await aiohttp_client(create_app(config, fetch=False))
    daemon = _Daemon(client.app, config, path)
    listener = RecordingTransport()
    await client.app[HUB].subscribe(
        client.app[HUB].admit(), listener, WireFormat.SSE_RAW, (OTHER,), None
    )
    write_config(path, _two_pairs(raw, [PAIR, OTHER]))
    daemon.reload()
    daemon.reload()
    async with asyncio.timeout(5):
        while daemon._reloads:
            await asyncio.sleep(0.01)
    assert daemon.config.fetch.pairs == (PAIR, OTHER)
    data = b"".join(listener.written)
    assert data.count(b"event: status\n") == 1
    assert b'"reason":"no price yet"' in data


async def test_alerts_settings_need_a_restart(
    aiohttp_client: AiohttpClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine, the outbox worker and the routes exist (or not) from the start: a reload
    that turns alerts on, or changes one of their settings, keeps the running values."""
    path = tmp_path / "feed.toml"
    base = (
        f'[database]\npath = "{tmp_path / "feed.sqlite3"}"\n'
        '[feed]\npairs = ["BTC-USD"]\nsources = { BTC-USD = ["simulated"] }\n'
        "[aggregation]\nquorum = 1\n"
    )
    path.write_text(base)
    client = await aiohttp_client(create_app(load_config(path), fetch=False))
    assert (await client.get("/api/alerts/rules")).status == 404
    path.write_text(base + "[alerts]\nenabled = true\nmax_attempts = 3\n")
    config, error = await reload_config(client.app, path)
    assert error is None
    assert config.alerts.enabled is False and config.alerts.max_attempts == 10
    assert current_config(client.app).alerts == config.alerts
    assert (await client.get("/api/alerts/rules")).status == 404
    assert "alerts.enabled" in capsys.readouterr().out
