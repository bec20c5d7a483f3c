"""The authenticated caller of a request (issue 13 contract; the auth branch owns this file)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, and what they may do."""

    kind: str
    """``anonymous`` | ``key`` | ``jwt`` (the metric label "auth kind")."""
    subject: str
    """The owner: key id, or ``f"{iss}|{sub}"`` for a JWT; ``local`` when auth is off."""
    credential: str
    """What per-credential limits count; ``""`` for anonymous (no limit)."""
    pairs: tuple[str, ...]
    """Granted pair patterns: exact ``BTC-USD`` or wildcard ``BTC-*``, ``*``."""
    history: bool
    """May read /api/prices."""
    alerts: bool
    """May manage alerts (issue 14)."""
    expires: float | None
    """Wall-clock unix seconds; ``None``: never."""


ANONYMOUS = Principal("anonymous", "local", "", ("*",), True, True, None)


def principal_of(request: web.Request) -> Principal:
    """The principal the auth middleware set on ``request``, or ``ANONYMOUS``."""
    found = request.get("principal")
    return found if isinstance(found, Principal) else ANONYMOUS
