"""Helpers for the auth tests: key files, signing keys, JWTs and a local JWKS server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bittrade_feed.auth.keys import KeyRecord, KeyStore, new_key, write_key_file
from bittrade_feed.auth.scopes import parse_scopes

ISSUER = "https://id.test/"
AUDIENCE = "bittrade-feed"
HS_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_key(
    scope: str = "pairs:*", expires: float | None = None, now: float = 1_763_900_000.0
) -> tuple[str, KeyRecord]:
    """A new API key and its row."""
    return new_key(KeyStore(), parse_scopes(scope), expires, "test", now)


def write_keys(path: Path, *records: KeyRecord) -> Path:
    write_key_file(path, list(records))
    return path


def token(
    key: Any = HS_SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A JWT with sensible defaults (iss, aud, exp in the far future of the fake clock)."""
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": 1_763_900_000 + 3600,
        "scope": "pairs:BTC-* history",
    }
    body.update(claims)
    for name in [k for k, v in body.items() if v is None]:
        del body[name]
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def jwk_of(key: Any, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return jwk


class JwksServer:
    """A local JWKS endpoint whose key set the test changes; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.status = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": self.keys})
