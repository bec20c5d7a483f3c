"""bittrade-ticker URL [--pairs PAIR,PAIR] [--json]: watch a feed from a terminal.

On a terminal: one line per pair, redrawn in place, with the price, its change since the
ticker started, the price's age and the connection state, in colour, each line cut at a
word to the terminal's width. Piped: one plain line per tick, or with --json one JSON
object per tick (prices as strings) and the connection state on stderr.

Exit status: 0 on Ctrl-C or when the daemon ends the stream (204); 1 on a permanent error
(401/403, another 4xx, not an event stream); 2 on a bad command line or URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TextIO

from bittrade_feed_client._version import __version__
from bittrade_feed_client.client import FeedClient
from bittrade_feed_client.errors import FeedError
from bittrade_feed_client.models import State, StateChange, Tick

PROG = "bittrade-ticker"
REFRESH = 1.0
"""Seconds between redraws on a terminal, so the age keeps counting while prices wait."""

_RESET, _BOLD, _DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
# With line wrapping off a long line is cut at the edge instead of taking two rows,
# which would throw off the cursor-up count of the next redraw.
_WRAP_OFF, _WRAP_ON = "\x1b[?7l", "\x1b[?7h"
_GREEN, _RED, _YELLOW = "\x1b[32m", "\x1b[31m", "\x1b[33m"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ANSI_SPLIT = re.compile(f"({_ANSI.pattern})")
_ELLIPSIS = "…"
DEFAULT_WIDTH = 80
"""Columns assumed when the terminal does not say."""
_STATE_COLOUR = {
    State.LIVE: _GREEN,
    State.STALE: _YELLOW,
    State.CONNECTING: _YELLOW,
    State.RECONNECTING: _YELLOW,
    State.CLOSED: _RED,
}


class View:
    """What every output mode remembers: the first and latest price of each pair."""

    def __init__(self, out: TextIO, pairs: Sequence[str]) -> None:
        self.out = out
        self.pairs: list[str] = list(pairs)
        self.first: dict[str, Decimal] = {}
        self.latest: dict[str, Tick] = {}
        self.state = StateChange(State.CONNECTING)

    def tick(self, tick: Tick) -> None:
        """Record a tick and show it."""
        if tick.pair not in self.pairs:
            self.pairs.append(tick.pair)
        self.first.setdefault(tick.pair, tick.price)
        self.latest[tick.pair] = tick
        self.show_tick(tick)

    def state_changed(self, change: StateChange) -> None:
        """Record the connection state and show it."""
        self.state = change
        self.show_state()

    def show_tick(self, tick: Tick) -> None:
        """Render one tick (per mode)."""

    def show_state(self) -> None:
        """Render a state change (per mode)."""

    def close(self) -> None:
        """Leave the terminal tidy."""


class JsonView(View):
    """One JSON object per tick on stdout, for other tools; state changes go to stderr."""

    def __init__(self, out: TextIO, pairs: Sequence[str], err: TextIO) -> None:
        super().__init__(out, pairs)
        self.err = err

    def show_tick(self, tick: Tick) -> None:
        """Write the tick's wire form as one line."""
        self.out.write(json.dumps(tick.to_json(), separators=(",", ":")) + "\n")
        self.out.flush()

    def show_state(self) -> None:
        """Tell the person watching stderr (the final state is reported on exit)."""
        if self.state.state is not State.CLOSED:
            reason = f" ({self.state.reason})" if self.state.reason else ""
            self.err.write(f"{PROG}: {self.state.state.value}{reason}\n")
            self.err.flush()


class PlainView(View):
    """One uncoloured line per tick and per state change (output is not a terminal)."""

    def show_tick(self, tick: Tick) -> None:
        """Write the pair's line."""
        self.out.write(line(self, tick.pair, colour=False) + "\n")
        self.out.flush()

    def show_state(self) -> None:
        """Write the new state."""
        reason = f" ({self.state.reason})" if self.state.reason else ""
        self.out.write(f"state: {self.state.state.value}{reason}\n")
        self.out.flush()


class LiveView(View):
    """A block of lines, one per pair, redrawn in place."""

    def __init__(self, out: TextIO, pairs: Sequence[str]) -> None:
        super().__init__(out, pairs)
        self.drawn = 0

    def show_tick(self, tick: Tick) -> None:
        """Redraw."""
        self.draw()

    def show_state(self) -> None:
        """Redraw."""
        self.draw()

    def draw(self) -> None:
        """Overwrite the previous block (the cursor stays at the end of its last line)."""
        lines = [line(self, p, colour=True) for p in self.pairs] or [
            waiting_line(self, colour=True)
        ]
        # Read each time: the terminal may have been resized since the last draw.
        width = terminal_width(self.out)
        lines = [fit(text, width) for text in lines]
        if self.drawn == 0:
            start = _WRAP_OFF
        else:
            start = "\r" + (f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else "")
        self.out.write(start + "\n".join("\x1b[2K" + text for text in lines))
        self.out.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        """Move below the block so the shell prompt does not overwrite it; wrap again."""
        if self.drawn:
            self.out.write(_WRAP_ON + "\n")
            self.out.flush()


def terminal_width(out: TextIO) -> int:
    """The width of the terminal ``out`` writes to (``DEFAULT_WIDTH`` if it does not say)."""
    try:
        return os.get_terminal_size(out.fileno()).columns or DEFAULT_WIDTH
    except (OSError, ValueError):
        return DEFAULT_WIDTH


def fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns: cut after a whole word, with an ellipsis.

    ANSI colour codes take no columns and those before the cut are kept, so the colours
    of what is shown stay; a reset follows the ellipsis.
    """
    plain = _ANSI.sub("", text)
    if len(plain) <= width:
        return text
    limit = max(0, width - 1)  # a column for the ellipsis
    # Keep plain[:cut] where a word ends (a space follows); one overlong word is cut hard.
    cut = limit
    while cut > 0 and plain[cut] != " ":
        cut -= 1
    visible = len(plain[:cut].rstrip()) or limit
    out: list[str] = []
    shown = 0
    for token in _ANSI_SPLIT.split(text):
        if shown >= visible:
            break
        out.append(token if _ANSI.fullmatch(token) else token[: visible - shown])
        shown += 0 if _ANSI.fullmatch(token) else len(out[-1])
    return "".join(out) + _ELLIPSIS + (_RESET if plain != text else "")


def paint(code: str, text: str, *, colour: bool) -> str:
    """``text`` in an ANSI colour, or as it is when ``colour`` is off."""
    return f"{code}{text}{_RESET}" if colour else text


def line(view: View, pair: str, *, colour: bool) -> str:
    """``PAIR  price  change  age  state`` for one pair."""
    # Live with a reason is live on simulated prices: shown, and not in the all-good green.
    code = _STATE_COLOUR[view.state.state]
    if view.state.state is State.LIVE and view.state.reason:
        code = _YELLOW
    state = paint(code, view.state.state.value, colour=colour)
    if view.state.reason:
        state += paint(_DIM, f" ({view.state.reason})", colour=colour)
    name = paint(_BOLD, f"{pair:<10}", colour=colour)
    tick = view.latest.get(pair)
    if tick is None:
        return f"{name} {'-':>14}  {'':>20}  {'':>9}  {state}"
    start = view.first[pair]
    change = tick.price - start
    pct = change / start * 100 if start else Decimal(0)
    moved = f"{f'{change:+,} ({pct:+.2f}%)':>20}"
    if change:
        moved = paint(_GREEN if change > 0 else _RED, moved, colour=colour)
    return f"{name} {tick.price:>14,}  {moved}  {age(tick):>9}  {state}"


def waiting_line(view: View, *, colour: bool) -> str:
    """The one line shown before any price arrived."""
    change = view.state
    reason = paint(_DIM, f" ({change.reason})", colour=colour) if change.reason else ""
    state = paint(_STATE_COLOUR[change.state], change.state.value, colour=colour)
    return f"waiting for prices: {state}{reason}"


def age(tick: Tick, now: datetime | None = None) -> str:
    """How old the price is, for people: ``0.4s``, ``12s``, ``3m05s``."""
    seconds = max(0.0, ((now or datetime.now(UTC)) - tick.ts).total_seconds())
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


async def run(
    url: str,
    pairs: Sequence[str] | None = None,
    *,
    as_json: bool = False,
    token: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Show the feed until it ends; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    view: View
    if as_json:
        view = JsonView(out, pairs or (), err)
    elif out.isatty():
        view = LiveView(out, pairs or ())
    else:
        view = PlainView(out, pairs or ())
    try:
        feed = FeedClient(url, pairs, token, on_state=view.state_changed)
    except ValueError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 2
    refresher = asyncio.create_task(_refresh(view)) if isinstance(view, LiveView) else None
    try:
        async with feed:
            async for tick in feed:
                view.tick(tick)
    except FeedError as exc:
        err.write(f"{PROG}: {exc}\n")
        return 1
    finally:
        if refresher is not None:
            refresher.cancel()
        view.close()
    err.write(f"{PROG}: {feed.reason}\n")
    return 0


async def _refresh(view: LiveView) -> None:
    while True:
        view.draw()
        await asyncio.sleep(REFRESH)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    about, exits = __doc__.split("\n\n")[1:3]
    parser = argparse.ArgumentParser(prog=PROG, description=about, epilog=exits)
    parser.add_argument("url", help="the daemon's base URL, e.g. http://localhost:8080")
    # One value per --pairs (comma-separated, repeatable): nargs="+" would take the URL too.
    parser.add_argument(
        "--pairs",
        action="extend",
        type=_pair_list,
        metavar="PAIR[,PAIR]",
        help="pairs to show, e.g. BTC-USD,ETH-USD (default: all the feed serves)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per tick")
    parser.add_argument(
        "--token",
        default=os.environ.get("BITTRADE_FEED_TOKEN"),
        help="API key (btk_...) or JWT, sent as a bearer token (default: $BITTRADE_FEED_TOKEN)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser.parse_args(argv)


def _pair_list(text: str) -> list[str]:
    return [p.strip().upper() for p in text.split(",") if p.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script."""
    args = parse_args(argv)
    try:
        return asyncio.run(run(args.url, args.pairs, as_json=args.json, token=args.token))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader (``| head``) is gone; say nothing more and do not let the
        # interpreter complain while flushing stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
