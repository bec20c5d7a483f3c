"""The blocking ``subscribe()`` facade: ticks, errors, and a clean stop on break and Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import threading

import pytest
from bittrade_feed_client import Tick, Unauthorized, subscribe

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
