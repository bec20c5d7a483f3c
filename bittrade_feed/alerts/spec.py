"""A rule's JSON form: parsed and checked field by field, and written back canonically.

One parser for both ways in: a request body and a stored row (``from_stored``), so the
store can never hold a rule the API would refuse. Every fault is an ``Invalid`` naming
the field, which the REST layer turns into problem+json.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bittrade_feed.alerts.rules import (
    DIRECTIONS,
    LEVEL_KINDS,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    STATE_KINDS,
    Frequency,
    Kind,
    Rule,
)
from bittrade_feed.models import PAIR_RE, format_ts, parse_ts, plain

MAX_PRICE = Decimal(10) ** 15
MAX_DECIMAL_TEXT = 40
MIN_EXPONENT = -18
"""Prices finer than 10^-18 are refused: no quote is that precise, and Decimal arithmetic
on them stays exact within the default 28-digit context."""
MAX_COOLDOWN_S = 366 * 86_400
MAX_COUNT = 1_000_000
MAX_PCT = Decimal(1000)
MAX_EXPIRES_MS = parse_ts("9999-12-31T23:59:59.999Z")

ENDPOINT_PREFIX = "ep_"
ENDPOINT_ID_RE = re.compile(r"ep_[0-9a-f]{16}")
MAX_WEBHOOKS = 10
"""Endpoints one rule may name."""

COMMON = frozenset({"pair", "kind", "frequency", "expires", "webhooks"})
FIELDS: dict[Kind, frozenset[str]] = {
    **{kind: COMMON | {"level"} for kind in STATE_KINDS},
    **{kind: COMMON | {"level", "hysteresis"} for kind in LEVEL_KINDS - STATE_KINDS},
    Kind.PCT_MOVE: COMMON | {"pct", "window_s", "direction"},
}
FREQUENCY_FIELDS = frozenset({"mode", "cooldown_s", "max_count"})


class Invalid(Exception):
    """A rule body fault: ``field`` is the JSON path of the offending value."""

    def __init__(self, field: str, detail: str, status: int = 422) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class Stored:
    """A rule's columns in ``alert_rules`` (besides owner, state and bookkeeping)."""

    pair: str
    kind: str
    params: dict[str, Any]
    frequency: dict[str, Any]
    expires_ms: int | None


def parse_rule(
    body: object, *, pairs: Collection[str] | None = None, now_ms: int | None = None
) -> Rule:
    """A ``Rule`` from a decoded JSON body; ``Invalid`` naming the first bad field.

    ``pairs``: the pairs the daemon serves (``None``: any well-formed pair).
    ``now_ms``: refuse an ``expires`` not after it (``None``: no such check).
    """
    if not isinstance(body, Mapping):
        raise Invalid("body", f"must be a JSON object, not {_type(body)}", 400)
    kind = _kind(body.get("kind"))
    for name in body:
        if name not in FIELDS[kind]:
            raise Invalid(str(name), f"is not a field of a {kind} rule", 422)
    pair = _pair(body.get("pair"), pairs)
    frequency = _frequency(body.get("frequency"), kind)
    expires_ms = _expires(body.get("expires"), now_ms)
    webhooks = _webhooks(body.get("webhooks"))
    if kind is Kind.PCT_MOVE:
        direction = body.get("direction", "either")
        if direction not in DIRECTIONS:
            raise Invalid("direction", f"must be one of {', '.join(DIRECTIONS)}")
        pct = _decimal(body, "pct", required=True, high=MAX_PCT)
        if direction == "down" and pct >= 100:
            raise Invalid("pct", "a fall of 100 % or more can never happen")
        window = _integer(body, "window_s", MIN_WINDOW_S, MAX_WINDOW_S, required=True)
        return Rule(
            pair,
            kind,
            pct=pct,
            window_s=window,
            direction=str(direction),
            frequency=frequency,
            expires_ms=expires_ms,
            webhooks=webhooks,
        )
    level = _decimal(body, "level", required=True, high=MAX_PRICE)
    band = _decimal(body, "hysteresis", required=False, high=MAX_PRICE, zero=True)
    if band >= level:
        raise Invalid("hysteresis", f"must be less than level ({plain(level)})")
    return Rule(
        pair,
        kind,
        level=level,
        hysteresis=band,
        frequency=frequency,
        expires_ms=expires_ms,
        webhooks=webhooks,
    )


def rule_body(rule: Rule) -> dict[str, Any]:
    """The canonical JSON of a rule: what the API answers and ``parse_rule`` takes back."""
    stored = to_stored(rule)
    body: dict[str, Any] = {"pair": stored.pair, "kind": stored.kind, **stored.params}
    body["frequency"] = stored.frequency
    body["expires"] = None if rule.expires_ms is None else format_ts(rule.expires_ms)
    return body


def to_stored(rule: Rule) -> Stored:
    """The columns that keep ``rule``."""
    params: dict[str, Any]
    if rule.kind is Kind.PCT_MOVE:
        params = {"pct": plain(rule.pct), "window_s": rule.window_s, "direction": rule.direction}
    elif rule.kind in STATE_KINDS:
        params = {"level": plain(rule.level)}
    else:
        params = {"level": plain(rule.level), "hysteresis": plain(rule.hysteresis)}
    if rule.webhooks:  # absent when empty: rules without webhooks read as before
        params["webhooks"] = list(rule.webhooks)
    freq = rule.frequency
    frequency: dict[str, Any] = (
        {"mode": "repeat", "cooldown_s": freq.cooldown_s, "max_count": freq.max_count}
        if freq.repeat
        else {"mode": "once"}
    )
    return Stored(rule.pair, str(rule.kind), params, frequency, rule.expires_ms)


def from_stored(stored: Stored) -> Rule:
    """The rule a row keeps, checked by the same parser as a request body."""
    body: dict[str, Any] = {"pair": stored.pair, "kind": stored.kind, **stored.params}
    body["frequency"] = stored.frequency
    if stored.expires_ms is not None:
        body["expires"] = format_ts(stored.expires_ms)
    return parse_rule(body)


def _type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _kind(value: object) -> Kind:
    choices = ", ".join(k.value for k in Kind)
    if value is None:
        raise Invalid("kind", f"is required: one of {choices}")
    try:
        return Kind(str(value)) if isinstance(value, str) else Kind("")
    except ValueError:
        raise Invalid("kind", f"must be one of {choices}") from None


def _pair(value: object, pairs: Collection[str] | None) -> str:
    if not isinstance(value, str) or PAIR_RE.match(value) is None:
        raise Invalid("pair", "is required: a BASE-QUOTE pair such as BTC-USD")
    if pairs is not None and value not in pairs:
        raise Invalid("pair", f"{value} is not a pair this feed serves")
    return value


def _decimal(
    body: Mapping[str, Any], name: str, *, required: bool, high: Decimal, zero: bool = False
) -> Decimal:
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(name, 'is required: a decimal number (a string such as "70000.5")')
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise Invalid(name, f"must be a decimal number or its string, not {_type(value)}")
    text = str(value)
    if len(text) > MAX_DECIMAL_TEXT:
        raise Invalid(name, f"has more than {MAX_DECIMAL_TEXT} characters")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Invalid(name, f"{text!r} is not a decimal number") from None
    low_ok = number >= 0 if zero else number > 0
    if not number.is_finite() or not low_ok or number >= high:
        bound = "at least 0" if zero else "more than 0"
        raise Invalid(name, f"must be {bound} and less than {plain(high)}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < MIN_EXPONENT:
        raise Invalid(name, f"has more than {-MIN_EXPONENT} decimal places")
    return number.normalize() if number else Decimal(0)


def _integer(
    body: Mapping[str, Any], name: str, low: int, high: int, *, required: bool, path: str = ""
) -> int:
    where = path or name
    value = body.get(name)
    if value is None and not required:
        return low
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(where, f"must be an integer from {low} to {high}")
    return value


def _webhooks(value: object) -> tuple[str, ...]:
    """Endpoint ids, well formed and distinct (whether the owner has them is the API's)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid("webhooks", f"must be a list of endpoint ids, not {_type(value)}")
    if len(value) > MAX_WEBHOOKS:
        raise Invalid("webhooks", f"may name at most {MAX_WEBHOOKS} endpoints")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not ENDPOINT_ID_RE.fullmatch(item):
            raise Invalid(f"webhooks[{i}]", "must be a webhook endpoint id (ep_ and 16 hex)")
        if item in value[:i]:
            raise Invalid(f"webhooks[{i}]", "names the same endpoint twice")
    return tuple(value)


def _frequency(value: object, kind: Kind) -> Frequency:
    if value is None:
        return Frequency()
    if not isinstance(value, Mapping):
        raise Invalid("frequency", 'must be an object: {"mode": "once"} or {"mode": "repeat"}')
    for name in value:
        if name not in FREQUENCY_FIELDS:
            raise Invalid(f"frequency.{name}", "is not a frequency field")
    mode = value.get("mode", "once")
    if mode == "once":
        for name in ("cooldown_s", "max_count"):
            if value.get(name) is not None:
                raise Invalid(f"frequency.{name}", 'is only used with "mode": "repeat"')
        return Frequency()
    if mode != "repeat":
        raise Invalid("frequency.mode", 'must be "once" or "repeat"')
    # A state holds on every tick: without a cooldown it would fire on each one.
    low = 1 if kind in STATE_KINDS else 0
    cooldown = _integer(
        value, "cooldown_s", low, MAX_COOLDOWN_S, required=low > 0, path="frequency.cooldown_s"
    )
    count = value.get("max_count")
    if count is not None:
        count = _integer(
            value, "max_count", 1, MAX_COUNT, required=True, path="frequency.max_count"
        )
    return Frequency(repeat=True, cooldown_s=cooldown, max_count=count)


def _expires(value: object, now_ms: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DECIMAL_TEXT:
        raise Invalid("expires", "must be an RFC 3339 time such as 2026-12-31T00:00:00Z")
    try:
        expires_ms = parse_ts(value)
    except (ValueError, OverflowError):
        raise Invalid("expires", f"{value!r} is not an RFC 3339 time") from None
    if not 0 < expires_ms <= MAX_EXPIRES_MS:
        # format_ts must be able to write it back (years 1970 to 9999).
        raise Invalid("expires", "must be between 1970 and 9999")
    if now_ms is not None and expires_ms <= now_ms:
        raise Invalid("expires", "is not in the future")
    return expires_ms
