"""The blocking ``subscribe()`` facade: ticks, errors, and a clean stop on break and Ctrl-C."""

from __future__ import annotations

import asyncio
import gc
import random
import re
import signal
import sys
import threading
import time
import warnings
from typing import Any

import pytest
from bittrade_feed_client import Tick, Unauthorized, subscribe
from bittrade_feed_client.sync import _LoopThread

SLOW_CALLBACK = re.compile(r"^Executing .* took \d+\.\d+ seconds$")
WAIT = 20.0  # a bound for a loaded CI machine, not a speed assertion
SCRIPT = """
import sys
from bittrade_feed_client import subscribe
try:
    for tick in subscribe(sys.argv[1]):
        print(tick.id, flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def feed_threads() -> list[threading.Thread]:
    """The background threads of sync subscriptions still alive."""
    return [t for t in threading.enumerate() if t.name == "bittrade-feed-client"]


async def test_subscribe_yields_ticks_and_break_joins_its_thread(daemon) -> None:
    """Snapshot and live ticks arrive in a plain for loop; break closes everything."""
    got_first = threading.Event()

    def consume() -> list[Tick]:
        ticks: list[Tick] = []
        for tick in subscribe(daemon.url, pairs=[daemon.pair]):
            ticks.append(tick)
            got_first.set()
            if len(ticks) == 2:
                break
        return ticks

    consumer = asyncio.ensure_future(asyncio.to_thread(consume))
    assert await asyncio.to_thread(got_first.wait, WAIT)
    new_id = await daemon.tick("73999.9")
    async with asyncio.timeout(WAIT):
        ticks = await consumer
    assert [t.id for t in ticks] == [new_id - 1, new_id]
    assert feed_threads() == []


async def test_an_exception_in_the_loop_body_closes_the_subscription(daemon) -> None:
    """KeyboardInterrupt raised while handling a tick propagates and leaves no thread."""

    def consume() -> str:
        try:
            for _tick in subscribe(daemon.url):
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            return "interrupted"
        return "ended"

    async with asyncio.timeout(WAIT):
        assert await asyncio.to_thread(consume) == "interrupted"
    assert feed_threads() == []


async def test_permanent_errors_surface_from_the_loop(scripted) -> None:
    """A 401 is raised from the for statement, as Unauthorized."""
    script = await scripted.start(scripted.answer(401, '{"detail":"no token"}'))

    def consume() -> None:
        for _tick in subscribe(script.url):
            pass

    with pytest.raises(Unauthorized, match="no token"):
        await asyncio.to_thread(consume)
    assert feed_threads() == []


async def test_ctrl_c_while_waiting_for_a_tick_stops_a_script_at_once(daemon) -> None:
    """SIGINT while blocked waiting for the next tick raises KeyboardInterrupt promptly."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-c",
        SCRIPT,
        daemon.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        assert await proc.stdout.readline() == b"1\n"
        proc.send_signal(signal.SIGINT)
        rest, errors = await proc.communicate()
    assert proc.returncode == 0
    assert rest == b"interrupted\n"
    # Development mode reports unclosed sessions, sockets and pending tasks on stderr. Its
    # "Executing <Task> took 0.1 seconds" notes only say the machine is busy.
    problems = [line for line in errors.decode().splitlines() if not SLOW_CALLBACK.search(line)]
    assert problems == []


class Interrupted(BaseException):
    """Stands in for the KeyboardInterrupt a Ctrl-C raises wherever the main thread is."""


def unawaited(caught: list[warnings.WarningMessage]) -> list[str]:
    """The "coroutine ... was never awaited" warnings among those caught."""
    gc.collect()  # a dropped coroutine warns when it is collected
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


def test_an_interrupt_before_the_hand_over_makes_no_coroutine(monkeypatch) -> None:
    """Ctrl-C landing as the call is handed to the loop leaves nothing made and unrun."""
    loop = _LoopThread()
    made: list[str] = []

    async def work() -> str:
        made.append("ran")
        return "done"

    real = loop.loop.call_soon_threadsafe
    calls = 0

    def interrupted_once(callback: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Interrupted  # where a signal may land: just before the hand-over
        return real(callback, *args)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(loop.loop, "call_soon_threadsafe", interrupted_once)
        with pytest.raises(Interrupted):
            loop.run(lambda: (made.append("made"), work())[1])
        monkeypatch.undo()
        loop.stop()
        assert made == []
        assert unawaited(caught) == []


@pytest.mark.parametrize("seed", range(200))
def test_giving_up_on_a_call_never_leaves_a_coroutine_unrun_or_running(seed: int) -> None:
    """The caller's timeout races the loop starting the call: either outcome is clean.

    Each seed blocks the loop, bounds the caller's wait and sets the call's own length
    at random, so the caller gives up before the coroutine is made, while it runs, or
    not at all. Whatever happened, a made coroutine ran (to its end or to its
    cancellation), an abandoned one was cancelled, and nothing warns.
    """
    rng = random.Random(seed)
    loop = _LoopThread()
    made: list[str] = []

    async def work(length: float) -> str:
        made.append("started")
        try:
            await asyncio.sleep(length)
        except asyncio.CancelledError:
            made.append("cancelled")
            raise
        made.append("finished")
        return "done"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.loop.call_soon_threadsafe(time.sleep, rng.uniform(0, 0.002))  # the loop is busy
        length = rng.choice([0.0, rng.uniform(0, 0.002)])
        try:
            outcome = loop.run(lambda: work(length), timeout=rng.uniform(0, 0.003))
        except TimeoutError:
            outcome = "gave up"
        loop.stop()
        assert unawaited(caught) == []
    if outcome == "done":
        assert made == ["started", "finished"]
    else:
        assert made in ([], ["started", "cancelled"], ["started", "finished"])
