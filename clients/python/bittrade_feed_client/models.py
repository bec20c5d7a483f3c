"""The values a subscriber sees: ticks, per-pair status and the connection state."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

SIMULATED_REASON = "Simulated prices: not for trading"
"""The reason a live feed gives while some of its prices come from the simulated source."""


class State(enum.Enum):
    """Where the subscription stands; only ``LIVE`` means the prices are current."""

    CONNECTING = "connecting"
    """The first connection is being made."""
    LIVE = "live"
    """Connected, and the daemon says every subscribed pair is current."""
    STALE = "stale"
    """The daemon says a pair is not current (``stale``: not refreshed; ``suspect``: a
    price jump waits for confirmation; any state but ``live``), or the connection went
    silent (then ``RECONNECTING`` follows at once: a silent connection is dropped)."""
    RECONNECTING = "reconnecting"
    """The connection was lost; waiting to try again, or trying."""
    CLOSED = "closed"
    """Finished: closed by the caller, ended by the daemon (204), or a permanent error."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """A new connection state and why it was entered."""

    state: State
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """One price as published by the daemon."""

    id: int
    """Event id: positive, strictly increasing across all pairs of a feed."""
    pair: str
    price: Decimal
    ts: datetime
    """When the daemon aggregated the price (aware, UTC)."""
    sources: tuple[str, ...]
    """The exchanges whose quotes went into the price."""
    simulated: bool = False
    """The daemon's simulated source made it: a fake price, never to trade on."""

    @classmethod
    def from_json(cls, data: Any) -> Tick:
        """Build from the wire form; ``ValueError`` if it is not a tick."""
        try:
            tick_id = data["id"]
            if isinstance(tick_id, bool) or not isinstance(tick_id, int) or tick_id <= 0:
                raise ValueError(f"id {tick_id!r} is not a positive integer")
            # str() first: a float on the wire must not leak binary rounding into Decimal.
            price = Decimal(str(data["price"]))
            if not price.is_finite():
                raise ValueError(f"price {data['price']!r} is not finite")
            return cls(
                id=tick_id,
                pair=str(data["pair"]),
                price=price,
                ts=parse_time(data["ts"]),
                sources=tuple(str(s) for s in data["sources"]),
                simulated=data.get("simulated") is True,
            )
        except (KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            raise ValueError(f"not a tick: {data!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """The wire form again (price as a string, time as RFC 3339 with milliseconds)."""
        return {
            "id": self.id,
            "pair": self.pair,
            "price": str(self.price),
            "ts": format_time(self.ts),
            "sources": list(self.sources),
            "simulated": self.simulated,
        }


@dataclass(frozen=True, slots=True)
class PairStatus:
    """What the daemon last said about one pair (its ``status`` event)."""

    pair: str
    state: str
    """``live`` or ``stale``."""
    since: datetime
    reason: str
    simulated: bool = False
    """The pair's configured sources include the daemon's simulated one."""

    @classmethod
    def from_json(cls, data: Any) -> PairStatus:
        """Build from a ``status`` event's data; ``ValueError`` if it is not one."""
        try:
            return cls(
                pair=str(data["pair"]),
                state=str(data["state"]),
                since=parse_time(data["since"]),
                reason=str(data.get("reason") or ""),
                simulated=data.get("simulated") is True,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a status: {data!r}") from exc


def simulated_pairs(latest: Mapping[str, Tick], statuses: Mapping[str, PairStatus]) -> list[str]:
    """The pairs whose prices are fake: as the latest price says, or before one, the status."""
    pairs = dict.fromkeys([*statuses, *latest])
    return [p for p in pairs if (latest[p] if p in latest else statuses[p]).simulated]


def parse_time(text: Any) -> datetime:
    """An RFC 3339 time as an aware UTC datetime (naive input is taken as UTC)."""
    if not isinstance(text, str):
        raise ValueError(f"time {text!r} is not a string")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as the daemon writes it."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
