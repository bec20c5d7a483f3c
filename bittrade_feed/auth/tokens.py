"""JWT verification with PyJWT: pinned algorithms per issuer, required exp/aud/iss.

The issuer is looked up by the token's (unverified) ``iss``; everything else comes from
that issuer's config: the algorithms (the token's ``alg`` header only has to be one of
them, so ``none`` and HS/RS confusion are refused), the key, the audience. ``exp`` and
``nbf`` are checked here against the daemon's clock, with ``auth.leeway``, so tests and
the stream's reauth timer agree on what "now" is.

JWKS URLs are fetched with aiohttp, never with PyJWT's ``PyJWKClient`` (it blocks the
event loop in urllib). Keys are cached for ``jwks_ttl``; an unknown ``kid`` refetches at
most every ``jwks_min_refetch`` seconds, so a flood of made-up kids costs one request.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import jwt
import structlog

from bittrade_feed.auth.principal import AuthFailure, Principal
from bittrade_feed.auth.scopes import parse_scopes
from bittrade_feed.auth.settings import (
    JwtIssuerConfig,
    PublicKey,
    read_public_key,
    read_secret,
)

log = structlog.get_logger("bittrade_feed.auth.tokens")

JWKS_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1 << 20


class NeedKeys(Exception):
    """Verification needs a (re)fetch of this key set first; the caller awaits it."""

    def __init__(self, jwks: Jwks) -> None:
        super().__init__(jwks.url)
        self.jwks = jwks


class Jwks:
    """One issuer's JWKS, fetched asynchronously and cached."""

    def __init__(
        self, url: str, ttl: float, min_refetch: float, monotonic: Callable[[], float]
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.monotonic = monotonic
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.tried_at: float | None = None
        self._lock = asyncio.Lock()

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The cached key ``kid``; ``NeedKeys`` when a fetch is due first."""
        now = self.monotonic()
        fresh = self.fetched_at is not None and now - self.fetched_at < self.ttl
        found = self.keys.get(kid)
        if (found is None or not fresh) and self._may_try(now):
            raise NeedKeys(self)
        return found  # a stale key set still serves while its refetch keeps failing

    def _may_try(self, now: float) -> bool:
        return self.tried_at is None or now - self.tried_at >= self.min_refetch

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Fetch the key set unless another request just did; failures keep the old keys."""
        async with self._lock:  # concurrent unknown kids share one fetch
            now = self.monotonic()
            if not self._may_try(now):
                return
            self.tried_at = now
            try:
                self.keys = await self._fetch(session)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
                log.warning(
                    "JWKS fetch failed, keeping the cached keys",
                    url=self.url,
                    reason=f"{type(exc).__name__}: {exc}",
                    cached=len(self.keys),
                )
                return
            self.fetched_at = now

    async def _fetch(self, session: aiohttp.ClientSession) -> dict[str, jwt.PyJWK]:
        timeout = aiohttp.ClientTimeout(total=JWKS_TIMEOUT)
        async with session.get(self.url, timeout=timeout) as resp:
            resp.raise_for_status()
            body = await resp.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"key set larger than {MAX_JWKS_BYTES} bytes")
        keys = jwt.PyJWKSet.from_json(body.decode()).keys
        return {k.key_id: k for k in keys if k.key_id}


class Issuer:
    """One ``[[auth.jwt]]`` issuer with its key loaded."""

    def __init__(self, config: JwtIssuerConfig, monotonic: Callable[[], float]) -> None:
        self.config = config
        self.static: bytes | PublicKey | None = None
        self.jwks: Jwks | None = None
        if config.secret_file is not None:
            self.static = read_secret(config.secret_file)
        elif config.public_key_file is not None:
            self.static = read_public_key(config.public_key_file)
        else:
            self.jwks = Jwks(config.jwks_url, config.jwks_ttl, config.jwks_min_refetch, monotonic)

    def key_for(self, header: dict[str, Any]) -> Any:
        """The verification key of a token with this header; ``NeedKeys`` to fetch first."""
        if self.jwks is None:
            return self.static
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthFailure("unknown_kid", "token has no kid header; this issuer uses a JWKS")
        found = self.jwks.key(kid)
        if found is None:
            raise AuthFailure("unknown_kid", f"no key {kid[:40]!r} in the issuer's key set")
        return found


class TokenVerifier:
    """Every configured issuer, by ``iss``."""

    def __init__(
        self, issuers: Sequence[JwtIssuerConfig], leeway: float, monotonic: Callable[[], float]
    ) -> None:
        self.issuers = {cfg.issuer: Issuer(cfg, monotonic) for cfg in issuers}
        self.leeway = leeway

    def verify(self, token: str, now: float) -> Principal:
        """The principal of a valid token; ``AuthFailure``, or ``NeedKeys`` to fetch first."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise AuthFailure("malformed", "not an API key or a JWT") from None
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthFailure("unknown_issuer", "token issuer (iss) is not configured")
        cfg = issuer.config
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise AuthFailure(
                "bad_token",
                f"algorithm {str(alg)[:20]!r} is not accepted from this issuer "
                f"(accepted: {', '.join(cfg.algorithms)})",
            )
        key = issuer.key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                # exp and nbf are judged below on the daemon's clock.
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.InvalidTokenError, jwt.InvalidKeyError) as exc:
            # PyJWT's messages name the failed check, never the token.
            raise AuthFailure("bad_token", f"token refused: {exc}") from None
        return self._principal(cfg, claims, now)

    def _principal(self, cfg: JwtIssuerConfig, claims: dict[str, Any], now: float) -> Principal:
        exp, nbf = _seconds(claims.get("exp")), _seconds(claims.get("nbf"))
        if exp is None:
            raise AuthFailure("bad_token", "token exp is not a number of seconds")
        if nbf is None and claims.get("nbf") is not None:
            raise AuthFailure("bad_token", "token nbf is not a number of seconds")
        if now > exp + self.leeway:
            raise AuthFailure("expired", "token has expired (exp is in the past)")
        if nbf is not None and now < nbf - self.leeway:
            raise AuthFailure("not_yet_valid", "token is not valid yet (nbf is in the future)")
        sub = claims.get("sub")
        subject = f"{cfg.issuer}|{sub if isinstance(sub, str) else ''}"
        raw = claims.get(cfg.scope_claim, "")
        words: str | list[str] = raw if isinstance(raw, str) else ""
        if isinstance(raw, list):  # some issuers send scopes as a JSON list
            words = [w for w in raw if isinstance(w, str)]
        scopes = parse_scopes(words, strict=False)
        return Principal(
            "jwt",
            subject,
            f"jwt:{subject}",
            scopes.pairs,
            scopes.history,
            scopes.alerts,
            # Accepted until exp + leeway, so that is when its streams end: ending them at
            # exp would let the client reconnect with the same token, again and again.
            exp + self.leeway,
        )


def _seconds(value: Any) -> float | None:
    """A claim's number of seconds; ``None`` if absent or not a (non-NaN) number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return None if math.isnan(seconds) else seconds
