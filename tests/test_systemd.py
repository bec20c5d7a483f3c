"""sd_notify as systemd sees it: the daemon runs as a child with ``$NOTIFY_SOCKET`` set.

The test plays systemd's side of the protocol with an abstract AF_UNIX datagram socket
and checks the order and content of what the daemon reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.test_utils import unused_port

from bittrade_feed.ops.watchdog import Watchdog
from tests.childdaemon import (
    START_TIMEOUT,
    NotifySocket,
    config_dict,
    run_daemon,
    write_config,
)
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges

WATCHDOG_USEC = 400_000
"""A short ``WatchdogSec=`` (0.4 s): pings every 0.2 s."""


def _env(notify: NotifySocket) -> dict[str, str]:
    """systemd's environment with a watchdog, which also makes STATUS come every 0.2 s."""
    return {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


async def test_ready_after_listener_answers_and_first_fetch(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """READY=1 comes once the API answers and the first price has been fetched."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with (
        NotifySocket() as notify,
        run_daemon(config, tmp_path, port=port, env={"NOTIFY_SOCKET": notify.address}) as daemon,
    ):
        ready = await notify.expect("READY=1", timeout=START_TIMEOUT)
        async with aiohttp.ClientSession() as session:
            async with session.get(daemon.url + "/healthz") as resp:
                assert resp.status == 200
            async with session.get(daemon.url + f"/api/price?pair={PAIR}") as resp:
                assert resp.status == 200
                assert (await resp.json())["price"] == "73365.3"
        assert notify.notes[ready].fields["STATUS"].startswith(f"{PAIR} 73365.3 (")
        assert notify.notes[ready].fields["STATUS"].endswith("; 0 subscribers")
        assert fx.requests["kraken"] >= 1
        assert fx.requests["bitfinex"] >= 1
        # No watchdog was asked for, so none is sent.
        assert not any(n.has("WATCHDOG") for n in notify.notes)


async def test_watchdog_pings_at_half_the_interval_while_healthy(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """With WATCHDOG_USEC set, WATCHDOG=1 arrives at least every half interval."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    notify = NotifySocket()
    env = _env(notify)
    async with notify, run_daemon(config, tmp_path, port=port, env=env):
        start = await notify.expect("READY=1", timeout=START_TIMEOUT)
        await asyncio.sleep(1.5)
        pings = [n.at for n in notify.notes[start:] if n.has("WATCHDOG=1")]
    assert len(pings) >= 6
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < WATCHDOG_USEC / 1e6


async def test_watchdog_not_for_another_pid(tmp_path: Path, fx: FakeExchanges) -> None:
    """WATCHDOG_PID naming another process means this one must not ping."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with NotifySocket() as notify:
        env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
        async with run_daemon(config, tmp_path, port=port, env=env):
            await notify.expect("READY=1", timeout=START_TIMEOUT)
            await asyncio.sleep(1.0)  # five ping periods, had the watchdog been ours
    assert not any(n.has("WATCHDOG") for n in notify.notes)


async def test_watchdog_withheld_while_the_fetch_loop_is_wedged(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A fetch loop stuck in a database write stops WATCHDOG=1; STATUS says so; it resumes.

    The wedge: another process holds the SQLite write lock (an operator's ``sqlite3``
    shell inside ``BEGIN EXCLUSIVE``), so the fetch loop's insert waits in SQLite's busy
    handler. That is the same place the loop sits when fsync hangs on a failing disk or
    a dead network mount, where nothing bounds the wait; here the 5 s busy timeout bounds
    it, which is still four times the progress window of this config (2 x 0.5 s interval
    + 0.25 s request timeout). The exchanges keep answering and the event loop stays
    responsive, so only the fetch loop's own progress can explain the missing pings.
    """
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with NotifySocket() as notify:
        env = _env(notify)
        async with run_daemon(config, tmp_path, port=port, env=env) as daemon:
            ready = await notify.expect("READY=1", timeout=START_TIMEOUT)
            await notify.expect("WATCHDOG=1", after=ready + 1)
            async with _write_lock(tmp_path / "feed.sqlite3"):
                locked = len(notify.notes)
                stalled = await notify.expect("STATUS", after=locked, timeout=3.0)
                while "fetch loop stalled" not in notify.notes[stalled].fields["STATUS"]:
                    stalled = await notify.expect("STATUS", after=stalled + 1, timeout=3.0)
                await asyncio.sleep(0.8)  # twice WatchdogSec: systemd would have fired
                silent = notify.notes[stalled:]
            resumed = await notify.expect("WATCHDOG=1", after=len(notify.notes), timeout=6)
            assert (await daemon.get("/healthz"))[0] == 200
    assert not any(n.has("WATCHDOG") for n in silent)
    assert len(silent) >= 3  # STATUS kept coming: the event loop itself was alive
    assert "fetch loop stalled" not in notify.notes[resumed].fields["STATUS"]
    events = [e["event"] for e in daemon.events()]
    assert any(e.startswith("fetch loop stalled") for e in events)
    assert "fetch loop progressing again" in events


@contextlib.asynccontextmanager
async def _write_lock(path: Path) -> AsyncIterator[None]:
    """Hold SQLite's write lock on ``path`` from this process (in a thread: it may wait)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    try:
        await asyncio.to_thread(db.execute, "BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            await asyncio.to_thread(db.execute, "ROLLBACK")
    finally:
        db.close()


async def test_reload_reports_reloading_then_ready(tmp_path: Path, fx: FakeExchanges) -> None:
    """SIGHUP sends RELOADING=1 with MONOTONIC_USEC (our clock), then READY=1."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with (
        NotifySocket() as notify,
        run_daemon(config, tmp_path, port=port, env={"NOTIFY_SOCKET": notify.address}) as daemon,
    ):
        ready = await notify.expect("READY=1", timeout=START_TIMEOUT)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.signal(signal.SIGHUP)
        reloading = await notify.expect("RELOADING=1", after=ready + 1)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        again = await notify.expect("READY=1", after=reloading + 1)
    usec = int(notify.notes[reloading].fields["MONOTONIC_USEC"])
    assert before <= usec <= after
    assert notify.notes[again].fields["STATUS"].startswith(f"{PAIR} ")
    assert not any(n.has("READY") for n in notify.notes[ready + 1 : reloading])


async def test_failed_reload_is_still_ready_with_the_reason(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """A bad config on SIGHUP still ends in READY=1, with STATUS naming the bad key."""
    port = unused_port()
    raw = config_dict(tmp_path, fx, port)
    config = write_config(tmp_path / "c.toml", raw)
    async with (
        NotifySocket() as notify,
        run_daemon(config, tmp_path, port=port, env=_env(notify)) as daemon,
    ):
        ready = await notify.expect("READY=1", timeout=START_TIMEOUT)
        raw["aggregation"]["quorum"] = 0
        write_config(config, raw)
        daemon.signal(signal.SIGHUP)
        reloading = await notify.expect("RELOADING=1", after=ready + 1)
        again = await notify.expect("READY=1", after=reloading + 1)
        status = notify.notes[again].fields["STATUS"]
        assert status.startswith("reload failed: aggregation.quorum: 0 is out of range")
        # Still serving, on the old config.
        later = await notify.expect("STATUS", after=again + 1)
        assert notify.notes[later].fields["STATUS"].startswith(f"{PAIR} 73365.3")


async def test_sigterm_sends_stopping_and_exits_0(tmp_path: Path, fx: FakeExchanges) -> None:
    """SIGTERM sends STOPPING=1 first and the process exits 0."""
    port = unused_port()
    config = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with NotifySocket() as notify:
        env = _env(notify)
        async with run_daemon(config, tmp_path, port=port, env=env) as daemon:
            ready = await notify.expect("READY=1", timeout=START_TIMEOUT)
            daemon.signal(signal.SIGTERM)
            stopping = await notify.expect("STOPPING=1", after=ready + 1)
            assert await daemon.wait() == 0
    # Nothing claims to be alive after STOPPING=1.
    assert not any(n.has("WATCHDOG") or n.has("READY") for n in notify.notes[stopping + 1 :])


async def test_bad_config_exits_78_and_tells_systemd(tmp_path: Path, fx: FakeExchanges) -> None:
    """A bad config exits 78 without READY=1; STATUS and stderr name the key."""
    raw = config_dict(tmp_path, fx, unused_port(), stream={"heartbeat": "often"})
    config = write_config(tmp_path / "c.toml", raw)
    notify = NotifySocket()
    async with notify, run_daemon(config, tmp_path, env={"NOTIFY_SOCKET": notify.address}) as d:
        assert await d.wait() == 78
        note = await notify.expect("STATUS", timeout=5)
    assert notify.notes[note].fields["STATUS"] == (
        "invalid config: stream.heartbeat: must be a number, not a string"
    )
    assert "stream.heartbeat: must be a number, not a string" in d.log()
    assert not any(n.has("READY") for n in notify.notes)


@dataclass
class _Progress:
    """What the fetch loop reports about its progress (monotonic seconds)."""

    progress_since: float | None = None
    progress_deadline: float | None = None


def test_stall_policy_judges_the_loop_by_the_deadline_it_set() -> None:
    """Stalled only past the loop's own deadline; reported as the time since its progress."""
    progress = _Progress()
    now = [100.0]
    watchdog = Watchdog(lambda: progress, lambda: now[0], lambda: "status")
    assert watchdog.stalled_for() is None, "not started: start-up has its own bound"
    progress.progress_since, progress.progress_deadline = 100.0, 100.0 + 2 * 120 + 0.25
    now[0] = 300.0  # 200 s into a 120 s interval's window: asleep, not stalled
    assert watchdog.stalled_for() is None
    # A reload to 0.5 s re-plans: a new promise, made now, on the new interval.
    progress.progress_since, progress.progress_deadline = 300.0, 300.0 + 2 * 0.5 + 0.25
    now[0] = 301.0
    assert watchdog.stalled_for() is None
    now[0] = 301.5
    assert watchdog.stalled_for() == 1.5
