"""Request parameters: every query value and header a handler reads, checked in one place.

Each check either returns a typed value or raises ``Problem(400)`` naming the parameter,
so no request value can reach ``int()``, ``datetime`` or SQLite unchecked (a 500 there).
Numbers are ASCII digits only and bounded in length: ``str.isdigit`` also accepts ``²``
and ``١٢``, and ``int()`` of 5,000 digits hits Python's integer-string limit.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bittrade_feed.models import parse_ts
from bittrade_feed.server.problems import Problem
from bittrade_feed.server.state import current_config

MAX_DIGITS = 18
"""Longest id or integer accepted: every such value fits SQLite's signed 64 bits."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant RFC 3339 (four-digit years) can write."""
MAX_TIME_TEXT = 64
"""An RFC 3339 time with fractions and offset is about 35 characters; longer is not one."""
SHOWN = 40
"""Characters of a bad value echoed back in the answer."""

_DIGITS = re.compile(f"[0-9]{{1,{MAX_DIGITS}}}")
_TIME_HINT = "use RFC 3339 (2026-11-23T20:31:00Z) or Unix seconds, from 1970 to 9999"


def shown(raw: object) -> str:
    """A bad value as echoed in a problem detail: quoted, and cut short if long."""
    text = str(raw)
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def ascii_int(raw: object) -> int | None:
    """The value of up to ``MAX_DIGITS`` ASCII digits, else ``None``."""
    if isinstance(raw, bool):
        return None
    text = str(raw) if isinstance(raw, int) else raw
    if not isinstance(text, str) or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)


def requested_pairs(request: web.Request, param: str, *, single: bool = False) -> tuple[str, ...]:
    """The pairs named in ``?pairs=`` / ``?pair=`` (default: every configured pair)."""
    known = current_config(request.app).fetch.pairs
    raw = request.query.get(param, "")
    if not raw:
        return known[:1] if single else known
    return check_pairs(raw.split(","), known, param, single=single)


def check_pairs(
    names: list[Any], known: tuple[str, ...], param: str, *, single: bool = False
) -> tuple[str, ...]:
    """Validate pair names against the configured ones; ``Problem`` 400 naming the bad one."""
    if single and len(names) != 1:
        raise Problem(400, f"{param} takes exactly one pair", param=param)
    pairs: list[str] = []
    for name in names:
        pair = name.strip().upper() if isinstance(name, str) else None
        if pair not in known:
            raise Problem(
                400,
                f"unknown pair {shown(name)} in {param}: this feed serves {', '.join(known)}",
                param=param,
            )
        if pair not in pairs:
            pairs.append(pair)
    return tuple(pairs)


def last_event_id(request: web.Request) -> int | None:
    """The resume point: ``Last-Event-ID`` header, else ``?last_event_id=``."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    return parse_event_id(raw, "Last-Event-ID")


def parse_event_id(raw: Any, name: str) -> int | None:
    """An event id is a non-negative integer of ASCII digits; empty means "none"."""
    return _optional_id(raw, name, "an event id", param=name)


def alerts_after(request: web.Request) -> int | None:
    """The alert resume point ``?alerts_after=`` (a firing id), else ``None``."""
    return parse_alerts_after(request.query.get("alerts_after"))


def parse_alerts_after(raw: Any) -> int | None:
    """A firing id to resume alert events after; ``Problem`` 400 with ``field`` if not one."""
    return _optional_id(raw, "alerts_after", "a firing id", field="alerts_after")


def _optional_id(raw: Any, name: str, what: str, **where: Any) -> int | None:
    """A non-negative integer of ASCII digits, ``None`` for empty; ``where`` names it in
    the problem (``param``, or ``field`` as the alerts API does)."""
    if raw is None or raw == "":
        return None
    value = ascii_int(raw.strip(" \t") if isinstance(raw, str) else raw)
    if value is None:
        raise Problem(
            400,
            f"{name} {shown(raw)} is not {what} (a whole number of up to {MAX_DIGITS} digits)",
            **where,
        )
    return value


def time_param(request: web.Request, name: str, default: int) -> int:
    """A time in epoch milliseconds from RFC 3339 or Unix seconds; ``default`` if absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    ms = parse_time(raw)
    if ms is None:
        raise Problem(400, f"{name}={shown(raw)} is not a time: {_TIME_HINT}", param=name)
    return ms


def parse_time(raw: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 time or Unix seconds in 1970-9999, else ``None``."""
    seconds = ascii_int(raw)
    if seconds is not None:
        ms = seconds * 1000
    elif raw.isascii() and len(raw) <= MAX_TIME_TEXT:
        try:
            ms = parse_ts(raw)
        except (ValueError, OverflowError):
            # An offset can push year 1 or 9999 outside what datetime can hold.
            return None
    else:
        return None
    return ms if 0 <= ms <= MAX_TIME_MS else None


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from ``lo`` to ``hi`` in ASCII digits; ``default`` if absent."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw)
    if value is None or not lo <= value <= hi:
        raise Problem(
            400, f"{name}={shown(raw)} must be a whole number from {lo} to {hi}", param=name
        )
    return value
