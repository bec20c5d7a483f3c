"""HTTPS on the API listener: the ``ssl.SSLContext`` from ``server.tls_cert``/``tls_key``.

On SIGHUP the files are read again into the same context (``load_cert_chain`` on a live
context applies to every handshake after it), so a renewed certificate is served without
a restart. A new pair is first loaded into a scratch context: a key that does not match
its certificate must never replace half of a working pair.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from bittrade_feed.config import ServerConfig
from bittrade_feed.errors import ConfigError


def server_context(server: ServerConfig) -> ssl.SSLContext | None:
    """The listener's context, or ``None`` for plain HTTP; ``ConfigError`` naming the key."""
    if server.tls_cert is None or server.tls_key is None:
        return None
    context = _new_context()
    _load(context, server.tls_cert, server.tls_key)
    return context


def reload_context(context: ssl.SSLContext, server: ServerConfig) -> None:
    """Load the (renewed) files into the live ``context``; ``ConfigError`` keeps the old."""
    cert, key = server.tls_cert, server.tls_key
    if cert is None or key is None:
        return
    _load(_new_context(), cert, key)
    _load(context, cert, key)


def _new_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            why = exc.strerror or str(exc)
            hint = " (under systemd: LoadCredential= or a group; README, TLS)"
            raise ConfigError([(name, f"cannot read {path}: {why}{hint}")]) from None
    try:
        # The chain alone first, so a broken certificate is not blamed on the key.
        _new_context().load_verify_locations(cafile=str(cert))
    except ssl.SSLError as exc:
        raise ConfigError(
            [("server.tls_cert", f"{cert} is not a PEM certificate: {exc.reason or exc}")]
        ) from None
    try:
        # A password callback, so an encrypted key fails here instead of prompting on a tty.
        context.load_cert_chain(str(cert), str(key), password=_no_password)
    except ssl.SSLError as exc:
        raise ConfigError(
            [
                (
                    "server.tls_key",
                    f"{key} is not the PEM private key of {cert}: {exc.reason or exc}",
                )
            ]
        ) from None


def _no_password() -> bytes:
    return b""
