"""The values that flow through the daemon: quotes in, ticks out, and their wire form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

PAIR_RE = re.compile(r"^([A-Z0-9]{2,10})-([A-Z0-9]{2,10})$")
SIMULATED_SOURCE = "simulated"
"""The fake source (``sources.simulated``): a price it went into is not one to trade on."""


def split_pair(pair: str) -> tuple[str, str]:
    """Return (base, quote) of a ``BASE-QUOTE`` pair; ``ValueError`` if it is not one."""
    match = PAIR_RE.match(pair)
    if match is None:
        raise ValueError(f"{pair!r} is not BASE-QUOTE (for example BTC-USD)")
    return match.group(1), match.group(2)


def plain(value: Decimal) -> str:
    """A decimal as the wire writes it: positional, never ``6.5E-7``, no trailing zeros."""
    # format "f" is positional at every exponent and needs no context, so it cannot raise.
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_ts(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as on the wire: ``2026-11-23T20:31:00.123Z``."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ts(text: str) -> int:
    """Parse an RFC 3339 / ISO 8601 time (``Z`` or offset) into epoch milliseconds."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Quote:
    """One exchange's price for one pair, as received."""

    source: str
    pair: str
    price: Decimal
    received_at: float
    """Local wall-clock time (epoch seconds) the answer arrived."""
    exchange_ts: float | None = None
    """The exchange's own timestamp (epoch seconds), where it gives one."""


@dataclass(frozen=True, slots=True)
class TickDraft:
    """An aggregated price that has not been stored yet (so has no id)."""

    pair: str
    price: Decimal
    ts_ms: int
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """A stored price: the unit every subscriber receives."""

    id: int
    pair: str
    price: Decimal
    ts_ms: int
    sources: tuple[str, ...]

    @property
    def simulated(self) -> bool:
        """Whether the simulated source went into this price (then it is fake)."""
        return SIMULATED_SOURCE in self.sources

    def to_json(self) -> dict[str, Any]:
        """The wire form shared by SSE, WebSocket and REST."""
        return {
            "id": self.id,
            "pair": self.pair,
            "price": plain(self.price),
            "ts": format_ts(self.ts_ms),
            "sources": list(self.sources),
            "simulated": self.simulated,
        }


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """Whether a pair's price is current (``live``) or no longer refreshed (``stale``)."""

    pair: str
    state: str
    since_ms: int
    reason: str
    simulated: bool = False
    """The pair's configured sources include the simulated one (its prices are fake)."""

    def to_json(self) -> dict[str, Any]:
        """The wire form of a ``status`` event."""
        return {
            "state": self.state,
            "pair": self.pair,
            "since": format_ts(self.since_ms),
            "reason": self.reason,
            "simulated": self.simulated,
        }
