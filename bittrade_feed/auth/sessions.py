"""The ``bt_session`` cookie: a server-signed session naming a credential and its expiry.

``<payload>.<mac>``, both base64url: the payload is compact JSON of the principal, the
MAC an HMAC-SHA256 over it with the session secret. Nothing in it is secret (it holds no
key), but nobody without the session secret can make or change one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from bittrade_feed.auth.principal import AuthFailure, Principal

COOKIE = "bt_session"
_CONTEXT = b"bt_session/1."
"""Bound into the MAC, so a MAC made for anything else never verifies as a session."""
MAX_COOKIE = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and checks session cookie values with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, _CONTEXT + payload.encode(), hashlib.sha256).digest())

    def sign(self, principal: Principal, expires: float) -> str:
        """The cookie value of a session of ``principal`` ending at wall time ``expires``."""
        body = {
            "k": principal.kind,
            "s": principal.subject,
            "c": principal.credential,
            "p": list(principal.pairs),
            "h": principal.history,
            "a": principal.alerts,
            "e": expires,
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def open(self, value: str, now: float) -> Principal:
        """The principal of a valid, unexpired session; ``AuthFailure`` otherwise."""
        payload, dot, mac = value.partition(".")
        if not dot or len(value) > MAX_COOKIE or not value.isascii():
            raise AuthFailure("bad_session", "session cookie is malformed; log in again")
        if not hmac.compare_digest(self._mac(payload).encode(), mac.encode()):
            raise AuthFailure(
                "bad_session", "session cookie is not valid here (signed with another secret?)"
            )
        try:
            body = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            raise AuthFailure("bad_session", "session cookie is malformed; log in again") from None
        principal = _principal(body)
        if principal is None:
            raise AuthFailure("bad_session", "session cookie is malformed; log in again")
        if principal.expires is not None and now >= principal.expires:
            raise AuthFailure("expired", "session has expired; log in again")
        return principal


def _principal(body: Any) -> Principal | None:
    if not isinstance(body, dict):
        return None
    kind, subject, cred, pairs = body.get("k"), body.get("s"), body.get("c"), body.get("p")
    history, alerts, expires = body.get("h"), body.get("a"), body.get("e")
    if not (
        isinstance(kind, str)
        and isinstance(subject, str)
        and isinstance(cred, str)
        and isinstance(pairs, list)
        and all(isinstance(p, str) for p in pairs)
        and isinstance(history, bool)
        and isinstance(alerts, bool)
        and isinstance(expires, int | float)
        and not isinstance(expires, bool)
    ):
        return None
    return Principal(kind, subject, cred, tuple(pairs), history, alerts, float(expires))
