"""The authenticator: turns what a request presents into a ``Principal``, synchronously.

Everything it needs is in memory (key store, session secret, tickets, loaded issuer
keys), so the middleware decides before any await; the one exception is a JWKS that must
be fetched first, signalled by ``NeedKeys``. Sessions and tickets of API keys are looked
up in the key store on every use, so revoking a key ends its sessions and tickets too.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import structlog

from bittrade_feed.auth.keys import KeyStore, load_key_file, looks_like_key
from bittrade_feed.auth.principal import AuthFailure, Principal
from bittrade_feed.auth.sessions import SessionSigner
from bittrade_feed.auth.settings import AuthConfig, read_secret
from bittrade_feed.auth.tickets import TicketBook
from bittrade_feed.auth.tokens import TokenVerifier
from bittrade_feed.clock import Clock
from bittrade_feed.config_checks import Bad
from bittrade_feed.errors import ConfigError

log = structlog.get_logger("bittrade_feed.auth")


class Authenticator:
    """Key store, JWT issuers, session signer and tickets of one daemon."""

    def __init__(self, config: AuthConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.keys = load_key_file(config.key_file) if config.key_file else KeyStore()
        self.sessions = SessionSigner(_session_secret(config.session_secret_file))
        try:
            self.tokens = TokenVerifier(config.jwt, config.leeway, clock.monotonic)
        except Bad as exc:
            raise ConfigError([("auth.jwt", str(exc))]) from None
        self.tickets = TicketBook()

    def credential(self, text: str) -> Principal:
        """The principal of an API key or a JWT (``NeedKeys`` if a JWKS must be fetched)."""
        now = self.clock.time()
        if looks_like_key(text):
            return self.keys.verify(text, now)
        if not self.config.jwt:
            raise AuthFailure("malformed", "not an API key (expected btk_<id>_<secret>)")
        return self.tokens.verify(text, now)

    def refresh(self, principal: Principal) -> Principal:
        """A principal from a session or ticket, checked again against the key store now.

        A key's current scopes apply (the key file may have narrowed them); the expiry is
        the earlier of the session's and the key's.
        """
        now = self.clock.time()
        if principal.expires is not None and now >= principal.expires:
            raise AuthFailure("expired", "session has expired; log in again")
        if principal.kind != "key":
            return principal
        current = self.keys.principal(principal.subject, now)
        ends = min(current.expires or math.inf, principal.expires or math.inf)
        return Principal(
            current.kind,
            current.subject,
            current.credential,
            current.pairs,
            current.history,
            current.alerts,
            None if ends == math.inf else ends,
        )

    def still_valid(self, credential: str) -> bool:
        """Whether a stream's credential may go on (the hub asks when a stream opens)."""
        kind, _, key_id = credential.partition(":")
        return kind != "key" or self.keys.still_valid(key_id, self.clock.time())

    def session_expiry(self, principal: Principal) -> float:
        """When a new session of ``principal`` ends: ``auth.session_ttl`` or its expiry."""
        ttl_end = self.clock.time() + self.config.session_ttl
        return min(ttl_end, principal.expires) if principal.expires is not None else ttl_end

    def reload_keys(self) -> str | None:
        """Read the key file again (SIGHUP); on a fault keep the old keys and say why."""
        path = self.config.key_file
        if path is None:
            return None
        try:
            self.keys = load_key_file(path)
        except ConfigError as exc:
            log.error("key file reload refused, keeping the loaded keys", reason=str(exc))
            return str(exc)
        log.info("key file reloaded", keys=len(self.keys.records), path=str(path))
        return None


def _session_secret(path: Path | None) -> bytes:
    if path is None:
        # Sessions then end at every restart and differ across cluster nodes (README).
        return secrets.token_bytes(32)
    try:
        return read_secret(path)
    except Bad as exc:
        raise ConfigError([("auth.session_secret_file", str(exc))]) from None
