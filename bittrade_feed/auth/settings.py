"""The ``[auth]`` config section: dataclasses, their checks, and the key material files.

Secrets stay in their own files (``key_file``, ``session_secret_file``, an issuer's
``secret_file``), so the config file itself holds none and may stay world-readable. The
files are read here once to check them, so ``check-config`` and a start report a bad one
by its key (exit 78); the daemon reads them again when it builds its authenticator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from bittrade_feed.config_checks import (
    Bad,
    Reader,
    boolean,
    choice,
    number,
    string,
    url,
)
from bittrade_feed.errors import ConfigError

DEFAULT_PUBLIC = ("/api/price", "/healthz", "/readyz", "/", "/dashboard/*")
"""Paths served without a credential when auth is on (``auth.public``)."""
ALWAYS_PUBLIC = ("/api/login", "/api/logout")
"""Reachable whatever ``auth.public`` says: a browser must be able to log in and out."""
COOKIE_SECURE = ("auto", "true", "false")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
MIN_SECRET_BYTES = 32
"""RFC 7518 3.2: an HS256 key of fewer than 256 bits is not allowed; the same for sessions."""
SESSION_TTL = 12 * 3600.0
LEEWAY = 30.0


@dataclass(frozen=True, slots=True)
class JwtIssuerConfig:
    """One trusted JWT issuer (an ``[[auth.jwt]]`` table)."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    """Pinned: a token's own ``alg`` header is checked against this, never trusted."""
    secret_file: Path | None = None
    public_key_file: Path | None = None
    jwks_url: str = ""
    scope_claim: str = "scope"
    jwks_ttl: float = 300.0
    """Seconds a fetched key set is used before it is fetched again."""
    jwks_min_refetch: float = 30.0
    """An unknown ``kid`` triggers a refetch at most this often (a flood cannot hammer it)."""


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Who may read what (off by default: every endpoint open, as before)."""

    enabled: bool = False
    key_file: Path | None = None
    session_secret_file: Path | None = None
    """HMAC key of the session cookies; ``None``: random at each start (see README)."""
    session_ttl: float = SESSION_TTL
    leeway: float = LEEWAY
    """Seconds of clock skew tolerated on a JWT's ``exp`` and ``nbf``."""
    cookie_secure: str = "auto"
    public: tuple[str, ...] = DEFAULT_PUBLIC
    jwt: tuple[JwtIssuerConfig, ...] = ()


def read_secret(path: Path) -> bytes:
    """A secret file's bytes, without the trailing newline editors add; ``Bad`` if unfit."""
    try:
        data = path.read_bytes().strip()
    except OSError as exc:
        raise Bad(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) < MIN_SECRET_BYTES:
        raise Bad(
            f"{str(path)!r} holds {len(data)} bytes; a secret needs at least {MIN_SECRET_BYTES} "
            "(make one: head -c 32 /dev/urandom | base64 > FILE)"
        )
    return data


PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def read_public_key(path: Path) -> PublicKey:
    """A PEM public key file, loaded; ``Bad`` if it is not an RSA, EC or EdDSA public key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Bad(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise Bad(
            f"{str(path)!r} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
            "give the issuer's public key, never a private one"
        ) from None
    if not isinstance(key, PublicKey):
        raise Bad(f"{str(path)!r} is not an RSA, EC or EdDSA public key")
    return key


def _file(value: Any) -> Path | None:
    text = string(value)
    if not text:
        return None  # "" is the example file's way of saying "none"
    if not text.strip() or "\0" in text:
        raise Bad("must be a file path")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise Bad(f"{text!r}: no home directory to expand ~ to; write the full path") from None


def _public_path(value: Any) -> str:
    text = string(value)
    if not text.startswith("/") or "*" in text[:-1] or any(c.isspace() for c in text):
        raise Bad(
            f"{text!r} must be a path like /api/price, or a prefix ending in * (/dashboard/*)"
        )
    return text


def _algorithm(value: Any) -> str:
    text = string(value)
    if text.lower() == "none":
        raise Bad('"none" means unsigned tokens, which are never accepted')
    return choice(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS)(text)


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad("must be a table ([[auth.jwt]])")
    return value


def build_auth(r: Reader) -> AuthConfig:
    """The ``[auth]`` section, every fault recorded on ``r`` under its key."""
    key_file = r.get("auth.key_file", None, _file)
    if key_file is not None:
        _check_key_file(r, key_file)
    secret_file = r.get("auth.session_secret_file", None, _file)
    if secret_file is not None:
        r.get("auth.session_secret_file", None, lambda _: read_secret(secret_file))
    issuers = tuple(
        issuer
        for i, table in enumerate(r.items("auth.jwt", _table) or ())
        if (issuer := _issuer(r, f"auth.jwt[{i}]", table)) is not None
    )
    auth = AuthConfig(
        enabled=r.get("auth.enabled", False, boolean),
        key_file=key_file,
        session_secret_file=secret_file,
        session_ttl=r.get("auth.session_ttl", SESSION_TTL, number(60, 30 * 86400)),
        leeway=r.get("auth.leeway", LEEWAY, number(0, 300)),
        cookie_secure=r.get("auth.cookie_secure", "auto", _cookie_secure),
        public=tuple(r.items("auth.public", _public_path) or DEFAULT_PUBLIC),
        jwt=issuers,
    )
    if auth.enabled and not key_file and not issuers and not r.faulted("auth"):
        r.fail(
            "auth.enabled",
            "nothing could ever authenticate: set auth.key_file or add an [[auth.jwt]] issuer",
        )
    seen: set[str] = set()
    for i, issuer in enumerate(issuers):
        if issuer.issuer in seen:
            r.fail(f"auth.jwt[{i}].issuer", f"{issuer.issuer!r} is configured twice")
        seen.add(issuer.issuer)
    return auth


def _cookie_secure(value: Any) -> str:
    # TOML booleans read naturally here too: cookie_secure = true.
    if isinstance(value, bool):
        return "true" if value else "false"
    return choice(COOKIE_SECURE)(value)


def _check_key_file(r: Reader, path: Path) -> None:
    from bittrade_feed.auth.keys import load_key_file  # noqa: PLC0415 - keys imports config

    try:
        load_key_file(path)
    except ConfigError as exc:
        for where, problem in exc.details:
            r.fail("auth.key_file", f"{where}: {problem}")


def _issuer(r: Reader, at: str, table: dict[str, Any]) -> JwtIssuerConfig | None:
    """One ``[[auth.jwt]]`` table, read by its own Reader so faults name ``auth.jwt[i].x``."""
    sub = Reader(table)
    issuer = sub.get("issuer", "", string)
    audience = sub.get("audience", "", string)
    algorithms = tuple(sub.items("algorithms", _algorithm) or ())
    secret_file = sub.get("secret_file", None, _file)
    public_key_file = sub.get("public_key_file", None, _file)
    jwks_url = sub.get("jwks_url", "", url)
    cfg = JwtIssuerConfig(
        issuer=issuer,
        audience=audience,
        algorithms=algorithms,
        secret_file=secret_file,
        public_key_file=public_key_file,
        jwks_url=jwks_url,
        scope_claim=sub.get("scope_claim", "scope", string),
        jwks_ttl=sub.get("jwks_ttl", 300.0, number(10, 86400)),
        jwks_min_refetch=sub.get("jwks_min_refetch", 30.0, number(1, 3600)),
    )
    _check_issuer(sub, cfg)
    try:
        sub.finish()
    except ConfigError as exc:
        for key, problem in exc.details:
            r.fail(f"{at}.{key}", problem)
        return None
    return cfg


def _check_issuer(sub: Reader, cfg: JwtIssuerConfig) -> None:
    for key, value in (("issuer", cfg.issuer), ("audience", cfg.audience)):
        if not value and not sub.faulted(key):
            sub.fail(key, "must be set: tokens without this exact value are refused")
    hmac = [a for a in cfg.algorithms if a in HMAC_ALGORITHMS]
    if not cfg.algorithms and not sub.faulted("algorithms"):
        sub.fail("algorithms", 'must list the algorithms this issuer signs with, e.g. ["RS256"]')
    elif hmac and len(hmac) != len(cfg.algorithms):
        # One key cannot be both: a public key used as an HMAC secret forges any token.
        sub.fail("algorithms", "mixes HS* with RS*/PS*/ES*/EdDSA; configure two issuers instead")
    sources = [s for s in (cfg.secret_file, cfg.public_key_file, cfg.jwks_url) if s]
    if len(sources) != 1:
        if not any(sub.faulted(k) for k in ("secret_file", "public_key_file", "jwks_url")):
            sub.fail("secret_file", "set exactly one of secret_file, public_key_file, jwks_url")
        return
    if hmac and cfg.secret_file is None:
        sub.fail("algorithms", "HS* algorithms need secret_file (a shared secret)")
    elif cfg.algorithms and not hmac and cfg.secret_file is not None:
        sub.fail("secret_file", "is for HS* only; give public_key_file or jwks_url")
    elif cfg.secret_file is not None:
        sub.get("secret_file", None, lambda _: read_secret(cfg.secret_file or Path()))
    elif cfg.public_key_file is not None:
        sub.get("public_key_file", None, lambda _: read_public_key(cfg.public_key_file or Path()))
