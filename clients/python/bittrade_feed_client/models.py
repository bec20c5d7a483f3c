"""The values a subscriber sees: ticks, per-pair status, alerts and the connection state."""

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
            return cls(
                id=positive_id(data["id"], "id"),
                pair=str(data["pair"]),
                price=parse_decimal(data["price"], "price"),
                ts=parse_time(data["ts"]),
                sources=tuple(str(s) for s in data["sources"]),
                simulated=data.get("simulated") is True,
            )
        except (KeyError, TypeError, AttributeError) as exc:
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


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing of an alert rule: a stream's ``alert`` event, or an entry of a rule's
    firings (``AlertsAPI.rule_firings``); both have this form."""

    id: int
    """The firing id: increasing per daemon, the resume point of alerts (``alerts_after``)."""
    rule_id: int
    tick_id: int | None
    """The price that fired it; ``None`` for a test firing."""
    at: datetime
    """When it fired (aware, UTC)."""
    data: dict[str, Any]
    """The payload: for a tick ``tick_id, pair, price, ts, kind, direction, detail, count,
    simulated``; for a test firing ``test, pair, kind, detail``."""

    @classmethod
    def from_json(cls, data: Any) -> Alert:
        """Build from the wire form; ``ValueError`` if it is not an alert."""
        try:
            tick_id = data["tick_id"]
            payload = data["data"]
            if not isinstance(payload, dict):
                raise ValueError(f"data {payload!r} is not an object")
            return cls(
                id=positive_id(data["id"], "id"),
                rule_id=positive_id(data["rule_id"], "rule_id"),
                tick_id=None if tick_id is None else positive_id(tick_id, "tick_id"),
                at=parse_time(data["at"]),
                data=dict(payload),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an alert: {data!r}") from exc

    @property
    def test(self) -> bool:
        """A test firing (``POST /api/alerts/rules/{id}/test``), not caused by a price."""
        return self.data.get("test") is True

    @property
    def pair(self) -> str | None:
        """The rule's pair."""
        return self._text("pair")

    @property
    def kind(self) -> str | None:
        """The rule's kind: ``above``, ``crosses_up``, ``pct_move``, ..."""
        return self._text("kind")

    @property
    def detail(self) -> str | None:
        """One sentence saying what happened."""
        return self._text("detail")

    @property
    def price(self) -> Decimal | None:
        """The price that fired it (``None`` for a test firing); never a float."""
        raw = self.data.get("price")
        return None if raw is None else parse_decimal(raw, "price")

    @property
    def simulated(self) -> bool:
        """The price came from the daemon's simulated source: never act on it."""
        return self.data.get("simulated") is True

    def _text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None


def positive_id(value: Any, name: str) -> int:
    """A wire id: a positive integer (not a bool); ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} {value!r} is not a positive integer")
    return value


def parse_decimal(value: Any, name: str) -> Decimal:
    """A finite price from the wire (a string, or a JSON number taken by its text)."""
    try:
        # str() first: a float on the wire must not leak binary rounding into Decimal.
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{name} {value!r} is not finite")
    return number


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
