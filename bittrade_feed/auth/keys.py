"""API keys: ``btk_<id>_<secret>``, kept in a key file as id, SHA-256 of the secret, scopes.

The file never holds a key, only the hash of its secret: a copy of the file lets nobody
in. Secrets are 32 random bytes, so a plain SHA-256 is enough (a slow hash guards only
guessable passwords), and ``hmac.compare_digest`` keeps the comparison constant-time.
The file is TOML (or JSON when its name ends in ``.json``)::

    [[key]]
    id = "3f9c2a7b41d0"
    sha256 = "9f86d0...64 hex digits"
    scope = "pairs:BTC-USD pairs:ETH-* history"
    expires = "2027-01-01T00:00:00Z"   # optional
    revoked = false
    created = "2026-12-01T23:00:00.000Z"
    note = "grafana"
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bittrade_feed.auth.principal import AuthFailure, Principal
from bittrade_feed.auth.scopes import Scopes, parse_scopes
from bittrade_feed.errors import ConfigError
from bittrade_feed.models import format_ts, parse_ts

PREFIX = "btk"
_ID = re.compile(r"[a-z0-9]{4,32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"btk_([a-z0-9]{4,32})_([A-Za-z0-9_-]{16,128})")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()
ROW_FIELDS = ("id", "sha256", "scope", "expires", "revoked", "created", "note")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One row of the key file."""

    id: str
    sha256: str
    scopes: Scopes
    expires: float | None = None
    revoked: bool = False
    created: str = ""
    note: str = ""

    def principal(self) -> Principal:
        """What this key may do, as the principal of its requests."""
        s = self.scopes
        return Principal(
            "key", self.id, credential_of(self.id), s.pairs, s.history, s.alerts, self.expires
        )

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at wall time ``now``."""
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


def credential_of(key_id: str) -> str:
    """The ``Principal.credential`` of a key: what revocation and limits match on."""
    return f"key:{key_id}"


def hash_secret(secret: str) -> str:
    """The hex SHA-256 the key file keeps instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(text: str) -> bool:
    """Whether a presented credential is in the API-key format (else it may be a JWT)."""
    return text.startswith(PREFIX + "_")


class KeyStore:
    """The rows of the key file, by id."""

    def __init__(self, records: Sequence[KeyRecord] = ()) -> None:
        self.records = {r.id: r for r in records}

    def verify(self, presented: str, now: float) -> Principal:
        """The principal of a presented key; ``AuthFailure`` if it is not a valid one."""
        match = _KEY.fullmatch(presented)
        if match is None:
            raise AuthFailure("malformed", "not an API key (expected btk_<id>_<secret>)")
        key_id, secret = match.groups()
        record = self.records.get(key_id)
        # Hashed and compared even for an unknown id, so timing says nothing about ids.
        ok = hmac.compare_digest(hash_secret(secret), record.sha256 if record else _DUMMY)
        if record is None:
            raise AuthFailure("unknown_key", f"API key id {key_id} is not in the key file")
        if not ok:
            raise AuthFailure("bad_secret", f"API key {key_id}: wrong secret")
        return self.principal(key_id, now)

    def principal(self, key_id: str, now: float) -> Principal:
        """The current principal of a key id (sessions and tickets re-check through this)."""
        record = self.records.get(key_id)
        if record is None:
            raise AuthFailure("revoked", f"API key {key_id} was removed from the key file")
        state = record.state(now)
        if state != "active":
            raise AuthFailure(state, f"API key {key_id} is {state}")
        return record.principal()

    def still_valid(self, key_id: str, now: float) -> bool:
        """Whether a key id is present, not revoked and not expired."""
        record = self.records.get(key_id)
        return record is not None and record.state(now) == "active"


# -- the file ------------------------------------------------------------------------------


def load_key_file(path: Path) -> KeyStore:
    """Read and check the key file; ``ConfigError`` naming each bad row and field."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [(where, "key file not found (create it: bittrade-feed keys add --key-file PATH)")]
        ) from None
    except OSError as exc:
        raise ConfigError([(where, f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = data.decode()
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError([(where, f"not valid {kind}: {exc}")]) from None
    return KeyStore(parse_rows(doc, where))


def parse_rows(doc: Any, where: str) -> list[KeyRecord]:
    """The rows of a decoded key file; every fault collected, then one ``ConfigError``."""
    faults: list[tuple[str, str]] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("key", []), list):
        raise ConfigError([(where, 'expected [[key]] tables (or {"key": [...]} in JSON)')])
    unknown = [k for k in doc if k != "key"]
    if unknown:
        faults.append((f"{where}: {unknown[0]}", "unknown key (the file holds only [[key]])"))
    records: list[KeyRecord] = []
    for i, row in enumerate(doc.get("key", [])):
        at = f"{where}: key[{i}]"
        try:
            record = _row(row, at, faults)
        except ValueError:
            continue
        if record.id in {r.id for r in records}:
            faults.append((f"{at}.id", f"{record.id} is listed twice"))
        records.append(record)
    if faults:
        raise ConfigError(faults)
    return records


def _row(row: Any, at: str, faults: list[tuple[str, str]]) -> KeyRecord:
    before = len(faults)
    if not isinstance(row, dict):
        faults.append((at, "must be a table"))
        raise ValueError(at)
    for name in row:
        if name not in ROW_FIELDS:
            faults.append((f"{at}.{name}", f"unknown field (expected {', '.join(ROW_FIELDS)})"))

    def text(name: str, default: str | None = None) -> str:
        value = row.get(name, default)
        if not isinstance(value, str):
            faults.append((f"{at}.{name}", "missing" if value is None else "must be a string"))
            return ""
        return value

    key_id, digest = text("id"), text("sha256")
    if key_id and not _ID.fullmatch(key_id):
        faults.append((f"{at}.id", "must be 4 to 32 lower-case letters or digits"))
    if digest and not _HEX64.fullmatch(digest):
        faults.append((f"{at}.sha256", "must be 64 lower-case hex digits (the secret's SHA-256)"))
    try:
        scopes = parse_scopes(text("scope", ""))
    except ValueError as exc:
        faults.append((f"{at}.scope", str(exc)))
        scopes = Scopes()
    revoked = row.get("revoked", False)
    if not isinstance(revoked, bool):
        faults.append((f"{at}.revoked", "must be true or false"))
    expires = _expiry(row.get("expires"), f"{at}.expires", faults)
    if len(faults) > before:
        raise ValueError(at)
    return KeyRecord(
        key_id, digest, scopes, expires, revoked is True, text("created", ""), text("note", "")
    )


def _expiry(value: Any, at: str, faults: list[tuple[str, str]]) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(value, str):
        try:
            return parse_ts(value) / 1000
        except (ValueError, OverflowError):
            pass
    faults.append((at, "must be an RFC 3339 time like 2027-01-01T00:00:00Z"))
    return None


def render(records: Sequence[KeyRecord], *, as_json: bool) -> str:
    """The key file's text for ``records`` (TOML, or JSON)."""
    rows = [_row_dict(r) for r in records]
    if as_json:
        return json.dumps({"key": rows}, indent=2) + "\n"
    out = [
        "# bittrade-feed API keys: SHA-256 of each secret, never a key. Edit with\n"
        "# `bittrade-feed keys`, then reload the daemon (SIGHUP).\n"
    ]
    for row in rows:
        out.append("\n[[key]]\n")
        for name, value in row.items():
            shown = str(value).lower() if isinstance(value, bool) else json.dumps(value)
            out.append(f"{name} = {shown}\n")
    return "".join(out)


def _row_dict(r: KeyRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"id": r.id, "sha256": r.sha256, "scope": r.scopes.words()}
    if r.expires is not None:
        row["expires"] = format_ts(round(r.expires * 1000))
    row |= {"revoked": r.revoked, "created": r.created, "note": r.note}
    return row


def write_key_file(path: Path, records: Sequence[KeyRecord]) -> None:
    """Replace the key file atomically, mode 0600: a reader sees the old or the new file."""
    text = render(records, as_json=path.suffix == ".json")
    directory = path.parent if str(path.parent) else Path(".")
    try:
        owner = path.stat()
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)  # mode 0600
    try:
        if owner is not None:
            # Root editing the service user's file keeps it the service's (else it could no
            # longer read it); anyone else cannot chown and keeps their own.
            with contextlib.suppress(PermissionError):
                os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory is synced.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_key(
    existing: KeyStore, scopes: Scopes, expires: float | None, note: str, now: float
) -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and its row; the id is new in ``existing``."""
    while True:
        key_id = secrets.token_hex(6)
        if key_id not in existing.records:
            break
    secret = secrets.token_urlsafe(32)
    record = KeyRecord(
        key_id, hash_secret(secret), scopes, expires, False, format_ts(round(now * 1000)), note
    )
    return f"{PREFIX}_{key_id}_{secret}", record


def revoked(record: KeyRecord) -> KeyRecord:
    """The same row, revoked (kept in the file so the id is not reused unknowingly)."""
    return replace(record, revoked=True)
