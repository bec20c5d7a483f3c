"""One webhook delivery attempt, signed per Standard Webhooks, through the SSRF guard.

Headers ``webhook-id`` (the outbox id: the same on every retry, so receivers can drop
duplicates), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret, space-separated,
so both the old and the new secret verify while one is being rotated). Signing is the
``standardwebhooks`` package's, the same code receivers verify with.

``send`` makes exactly one attempt: no redirects (a 3xx is a failure), a bounded read
of the answer, and an ``Outcome`` that says what the retry schedule needs (success,
Retry-After, 410 gone, or a refusal that no retry can fix).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from bittrade_feed.alerts.ssrf import Policy, Refused, check_url

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
"""The spec asks for at least 24 random bytes."""
MAX_READ = 64 * 1024
"""Bytes of a receiver's answer read (then the connection is dropped)."""
MAX_RETRY_AFTER = 86_400.0


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message(kind: str, data: dict[str, Any], at: float) -> bytes:
    """The body: ``{"type", "timestamp", "data"}`` as the spec's payload structure."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": kind, "timestamp": stamp, "data": data}, separators=(",", ":")
    ).encode()


def signed_headers(msg_id: str, body: bytes, keys: Sequence[str], at: float) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in ``keys``."""
    if not keys:
        raise ValueError("a webhook needs at least one secret")
    when = datetime.fromtimestamp(int(at), UTC)
    text = body.decode()
    signatures = " ".join(Webhook(key).sign(msg_id, when, text) for key in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": signatures,
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    delivered: bool
    status: int | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (429, 503), if it said."""
    gone: bool = False
    """410: the receiver asks to stop; the endpoint is disabled."""
    refused: bool = False
    """The SSRF guard refused the URL or its addresses: retrying cannot help."""
    error: str = ""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), bounded."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min(when.timestamp() - now, MAX_RETRY_AFTER))


async def send(
    session: aiohttp.ClientSession,
    policy: Policy,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    now: float,
) -> Outcome:
    """POST ``body`` once; never raises for anything the receiver or network does."""
    try:
        target = check_url(url, policy)
        async with session.post(
            target,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
            allow_redirects=False,
        ) as resp:
            await resp.content.read(MAX_READ)
            status = resp.status
            wait = retry_after(resp.headers.get("Retry-After"), now)
    except Refused as exc:
        return Outcome(False, refused=True, error=f"refused: {exc.reason}")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= status < 300:
        return Outcome(True, status)
    detail = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return Outcome(False, status, retry_after=wait, gone=status == 410, error=detail)
