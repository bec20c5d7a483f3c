"""bittrade-ticker: JSON lines and a terminal display against the daemon, and exit codes."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios

import pytest
from bittrade_feed_client import ticker

WAIT = 5.0
TICKER = (sys.executable, "-X", "dev", "-m", "bittrade_feed_client.ticker")


async def test_json_prints_one_object_per_tick_and_ctrl_c_exits_0(daemon) -> None:
    """--json: the wire form of each tick, one per line, prices as strings; SIGINT -> 0."""
    # The options before the URL, as people type it: --pairs must not swallow the URL.
    proc = await asyncio.create_subprocess_exec(
        *TICKER,
        "--json",
        "--pairs",
        daemon.pair,
        daemon.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        first = json.loads(await proc.stdout.readline())
        await daemon.tick("73401.75")
        second = json.loads(await proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        rest, errors = await proc.communicate()
    assert first["price"] == "73380.5"
    assert second == {
        "id": 2,
        "pair": daemon.pair,
        "price": "73401.75",
        "ts": second["ts"],
        "sources": second["sources"],
        "simulated": False,
    }
    assert second["ts"].endswith("Z")
    assert (proc.returncode, rest) == (0, b"")
    assert errors == b"bittrade-ticker: live\n"


async def test_terminal_shows_a_coloured_live_line_per_pair(daemon) -> None:
    """On a TTY: the pair's line with price, change, age and state, in ANSI colour."""
    controller, terminal = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *TICKER, daemon.url, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    screen = b""

    async def read_until(text: bytes) -> None:
        nonlocal screen
        while text not in screen:
            screen += await asyncio.to_thread(os.read, controller, 4096)

    try:
        async with asyncio.timeout(WAIT):
            await read_until(b"73,380.5")
            await read_until(b"live")
            await daemon.tick("73400.5")
            await read_until(b"+20.0 (+0.03%)")
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    finally:
        os.close(controller)
    assert f"\x1b[1m{daemon.pair}".encode() in screen
    assert b"\x1b[32mlive\x1b[0m" in screen
    assert b"\x1b[32m      +20.0 (+0.03%)\x1b[0m" in screen
    assert b"\x1b[2K" in screen


async def test_piped_output_is_plain_lines_and_a_204_exits_0(scripted) -> None:
    """Not a TTY and no --json: uncoloured lines; the daemon's 204 is a clean stop."""
    body = b"retry: 10\n\n" + scripted.price(1, "100") + scripted.price(2, "101.5")
    script = await scripted.start(scripted.stream(body), scripted.answer(204))
    out, err = io.StringIO(), io.StringIO()
    assert await ticker.run(script.url, out=out, err=err) == 0
    assert "\x1b" not in out.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0] == "state: live"
    ticks = [line.split()[:4] for line in lines if line.startswith("BTC-USDT")]
    assert ticks == [
        ["BTC-USDT", "100", "+0", "(+0.00%)"],
        ["BTC-USDT", "101.5", "+1.5", "(+1.50%)"],
    ]
    assert lines[-1] == "state: closed (the daemon ended the stream (HTTP 204))"
    assert err.getvalue() == "bittrade-ticker: the daemon ended the stream (HTTP 204)\n"


async def test_unauthorized_exits_1_with_a_one_line_reason(scripted) -> None:
    """A permanent error: exit status 1 and the daemon's detail on one stderr line."""
    script = await scripted.start(scripted.answer(401, '{"detail":"bad token"}'))
    out, err = io.StringIO(), io.StringIO()
    assert await ticker.run(script.url, as_json=True, out=out, err=err) == 1
    assert err.getvalue() == "bittrade-ticker: HTTP 401: bad token\n"
    assert out.getvalue() == ""


def test_bad_url_exits_2(capsys) -> None:
    """A URL that is not http(s) is a usage error: status 2, one line."""
    assert ticker.main(["ftp://feed.example/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bittrade-ticker: 'ftp://feed.example/' is not an http")
    assert err.count("\n") == 1


def test_pairs_takes_one_value_and_leaves_the_url() -> None:
    """``--pairs ETH-USD URL``: the URL stays the URL; commas and repeats add pairs."""
    args = ticker.parse_args(["--pairs", "ETH-USD", "http://localhost:8080"])
    assert (args.url, args.pairs) == ("http://localhost:8080", ["ETH-USD"])
    args = ticker.parse_args(["--pairs", "eth-usd, btc-usd", "--pairs", "LTC-EUR", "http://h"])
    assert (args.url, args.pairs) == ("http://h", ["ETH-USD", "BTC-USD", "LTC-EUR"])
    assert ticker.parse_args(["http://h"]).pairs is None


@pytest.mark.parametrize(
    "command",
    [
        (*TICKER, "--help"),
        (sys.executable, "-m", "bittrade_feed.cli", "--help"),
        (sys.executable, "-m", "bittrade_feed.cli", "serve", "--help"),
        (sys.executable, "-m", "bittrade_feed.cli", "check-config", "--help"),
    ],
)
def test_help_is_plain_text(command: tuple[str, ...]) -> None:
    """``--help`` of both CLIs shows no reStructuredText markup."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)  # noqa: S603
    assert done.stdout.startswith("usage: ")
    assert "``" not in done.stdout
    assert not re.search(r":(?:class|func|meth|mod):`", done.stdout)


def test_fit_cuts_after_a_whole_word_and_keeps_colours() -> None:
    """Lines longer than the terminal end in an ellipsis after a whole word."""
    text = "stale (BTC-USD: quorum not met: 0 of 7 sources answered, 2 needed)"
    assert ticker.fit(text, 80) == text
    assert ticker.fit(text, 30) == "stale (BTC-USD: quorum not…"
    assert ticker.fit("abcdefghij", 5) == "abcd…", "one overlong word is cut hard"
    coloured = "\x1b[33mstale\x1b[0m\x1b[2m (BTC-USD: quorum not met)\x1b[0m"
    assert ticker.fit(coloured, 20) == "\x1b[33mstale\x1b[0m\x1b[2m (BTC-USD:…\x1b[0m"


async def test_terminal_line_is_cut_at_a_word_to_the_terminal_width(stale_daemon) -> None:
    """A stale reason longer than a 100-column terminal ends in an ellipsis after a word."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        *TICKER, stale_daemon.url, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    screen = b""
    try:
        async with asyncio.timeout(WAIT):
            while not re.search("stale.*…".encode(), screen):
                screen += await asyncio.to_thread(os.read, controller, 4096)
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    finally:
        os.close(controller)
    drawn = [text for text in screen.decode().split("\x1b[2K") if "…" in text][-1]
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.split("…")[0] + "…")
    reason = "stale (BTC-USDT: quorum not met: 0 of 2 sources answered, 2 needed)"
    assert len(last) <= 100
    assert last.endswith("…")
    shown = last.removesuffix("…")
    cut = shown[shown.index("stale") :]  # the line is about 60 columns up to the state
    assert reason.startswith(cut), last
    assert reason[len(cut)] == " ", f"cut mid-word: {last!r}"
