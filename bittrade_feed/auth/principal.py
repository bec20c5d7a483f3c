"""The authenticated caller of a request, as every layer past the auth middleware sees it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking and what they may read."""

    kind: str
    """``anonymous``, ``key`` or ``jwt`` (the metric label "auth kind")."""
    subject: str
    """The owner: key id, ``iss|sub`` for a JWT; ``local`` when auth is off."""
    credential: str
    """What per-credential limits count and revocation matches; "" for anonymous."""
    pairs: tuple[str, ...]
    """Granted pair patterns: exact ``BTC-USD``, wildcard ``BTC-*`` / ``*-USD``, or ``*``."""
    history: bool
    """May read /api/prices."""
    alerts: bool
    """May manage alerts."""
    expires: float | None
    """Wall-clock unix seconds; ``None`` = never."""


PRINCIPAL = web.RequestKey("principal", Principal)
"""Where the auth middleware puts the request's principal (``request[PRINCIPAL]``)."""

ANONYMOUS = Principal("anonymous", "local", "", ("*",), True, True, None)
"""Everyone when auth is off, and callers of public endpoints when it is on."""


def principal_of(request: web.Request) -> Principal:
    """The principal the auth middleware set, else ``ANONYMOUS`` (auth off)."""
    found = request.get(PRINCIPAL)
    return ANONYMOUS if found is None else found


class AuthFailure(Exception):
    """A credential was refused: ``reason`` is a fixed word (a metric label), ``detail`` is
    what the client is told. Neither ever contains the credential."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


FAILURE_REASONS = (
    "missing",
    "malformed",
    "unknown_key",
    "bad_secret",
    "revoked",
    "expired",
    "not_yet_valid",
    "bad_token",
    "unknown_issuer",
    "unknown_kid",
    "bad_session",
    "bad_ticket",
)
"""Every ``AuthFailure.reason``: the bounded label set of the auth-failure metric."""
