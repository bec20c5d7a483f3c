"""Background tasks crash loudly: logged once, counted, then restarted or fatal.

The crashes are real: a subscriber transport whose ``write`` raises an exception type no
code expects (``Boom``), under the real hub and app; the fake clock makes backoffs exact.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.pytest_plugin import AiohttpClient
from structlog.testing import capture_logs

from bittrade_feed.broadcast.wire import WireFormat
from bittrade_feed.cli import _Daemon
from bittrade_feed.config import Config
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.ops.supervise import Supervisor
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB, METRICS, SUPERVISOR
from tests.fakeclock import FakeClock, settle
from tests.streamutil import RecordingTransport

PAIR = "BTC-USDT"
CRASHES = "bittrade_feed_task_crashes_total"


class Boom(LookupError):
    """An exception type nothing in the daemon catches on purpose."""


def _crashes(app: Any, task: str) -> float | None:
    return app[METRICS].registry.get_sample_value(CRASHES, {"task": task})


def _crash_lines(logs: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "task crashed" and e["task"] == task]


async def test_crashed_heartbeat_timer_is_logged_counted_and_restarted(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """The timer dies on a raising write, is logged and counted, and runs again after 1 s."""
    config = daemon_config(stream={"heartbeat": 3.0})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    app = client.app
    transport = RecordingTransport()
    await app[HUB].subscribe(app[HUB].admit(), transport, WireFormat.SSE_RAW, (PAIR,), None)
    assert _crashes(app, "hub-heartbeat") == 0
    with capture_logs() as logs:
        transport.fail = Boom("transport exploded")
        await clock.advance(3.0)  # idle for a heartbeat period: the timer writes, and dies
        assert _crashes(app, "hub-heartbeat") == 1
        (line,) = _crash_lines(logs, "hub-heartbeat")
        assert line["log_level"] == "error"
        assert line["reason"] == "Boom: transport exploded"
        transport.fail = None
        await clock.advance(1.0 + 1.0)  # the first backoff, then one timer period
        await settle()
    assert transport.written[-1] == b": keep-alive\n\n", "the restarted timer sends heartbeats"
    assert _crashes(app, "hub-heartbeat") == 1
    assert any(e["event"] == "restarting task" and e["in_s"] == 1.0 for e in logs)
    assert app[SUPERVISOR].failed is None
    assert (await client.get("/healthz")).status == 200


async def test_crashed_coalescing_flush_is_fatal_and_healthz_says_so(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """A flush that raises loses events: logged, counted, and /healthz and /readyz turn 503."""
    config = daemon_config(stream={"coalesce_ms": 5})
    client = await aiohttp_client(create_app(config, fetch=False))
    app = client.app
    transport = RecordingTransport()
    await app[HUB].subscribe(app[HUB].admit(), transport, WireFormat.SSE_RAW, (PAIR,), None)
    transport.fail = Boom("transport exploded")
    with capture_logs() as logs:
        await app[FETCHER].run_cycle()  # the price waits in the window, then the flush runs
        async with asyncio.timeout(5):
            while app[SUPERVISOR].failed is None:
                await asyncio.sleep(0.005)
    assert len(_crash_lines(logs, "hub-flush")) == 1
    assert _crashes(app, "hub-flush") == 1
    health = await client.get("/healthz")
    assert health.status == 503
    assert (await health.json())["detail"] == "task hub-flush crashed: Boom: transport exploded"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["tasks"]["ok"] is False


async def test_restarts_back_off_and_reset_after_a_healthy_run(clock: FakeClock) -> None:
    """Backoff doubles 1, 2, 4 s while a loop keeps crashing, back to 1 s after a long run."""
    metrics = Metrics(new_registry())
    supervisor = Supervisor(metrics.task_crashes, clock.sleep, clock.monotonic)
    starts: list[float] = []
    healthy_run = [False]

    async def flaky() -> None:
        starts.append(clock.monotonic())
        if healthy_run[0]:
            healthy_run[0] = False
            await clock.sleep(120)
        raise Boom("again")

    with capture_logs() as logs:
        task = supervisor.spawn("flaky", flaky, restart=True)
        await settle()
        for _ in range(3):
            await clock.advance(4.0)
        healthy_run[0] = True
        await clock.advance(200.0)
        await supervisor.cancel(task)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    # Crashes at once: waits of 1, 2, 4, 8 s; then a 120 s run and a wait of 1 s (reset,
    # not 16 s), then doubling again.
    assert gaps == [1.0, 2.0, 4.0, 8.0, 120.0 + 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert len(_crash_lines(logs, "flaky")) == len(starts)
    assert metrics.registry.get_sample_value(CRASHES, {"task": "flaky"}) == len(starts)
    assert supervisor.failed is None


@pytest.mark.parametrize("ending", ["raises", "returns"])
async def test_fatal_task_ends_the_daemon_with_exit_1(
    aiohttp_client: AiohttpClient,
    daemon_config: Callable[..., Config],
    ending: str,
) -> None:
    """A fetch loop that raises, or just ends, stops the CLI's daemon with exit code 1."""
    config = daemon_config()
    client = await aiohttp_client(create_app(config, fetch=False))
    daemon = _Daemon(client.app, config, None)

    async def fetch_loop() -> None:
        await asyncio.sleep(0)
        if ending == "raises":
            raise Boom("fetch loop exploded")

    with capture_logs() as logs:
        client.app[SUPERVISOR].spawn("fetch-loop", fetch_loop, restart=False)
        async with asyncio.timeout(5):
            await daemon.stopping.wait()
    assert daemon.exit_code == 1
    (line,) = _crash_lines(logs, "fetch-loop")
    ended = "RuntimeError: ended on its own"
    assert line["reason"] == ("Boom: fetch loop exploded" if ending == "raises" else ended)
    assert _crashes(client.app, "fetch-loop") == 1
    assert (await client.get("/healthz")).status == 503
