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
import hashlib
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
    return json.dumps(
        {"type": kind, "timestamp": _rfc3339(at), "data": data}, separators=(",", ":")
    ).encode()


BODY_FORMATS = ("standard", "alertmanager")
"""An endpoint's body format: Standard Webhooks' ``{type, timestamp, data}``, or the JSON
Prometheus Alertmanager posts to a ``webhook_config`` receiver (version 4), for receivers
that already take Alertmanager's. Both are signed the same way."""
ALERTNAMES = {"alert.fired": "BittradeFeedPriceAlert", "alert.test": "BittradeFeedTest"}
NEVER_ENDS = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert that has not resolved (a firing never does)."""


def body_for(body_format: str, kind: str, data: dict[str, Any], at: float, msg_id: str) -> bytes:
    """The request body of one delivery in the endpoint's format (``BODY_FORMATS``)."""
    if body_format == "alertmanager":
        return alertmanager(kind, data, at, msg_id)
    return message(kind, data, at)


def alertmanager(kind: str, data: dict[str, Any], at: float, msg_id: str) -> bytes:
    """One firing as an Alertmanager webhook notification (a group of one ``firing`` alert).

    Labels: ``alertname`` and, when the firing has them, ``pair``, ``kind``, ``direction``;
    annotations: ``summary`` (the detail) and the price and tick. The fingerprint derives
    from the ``webhook-id``, so a retry carries the same one.
    """
    name = ALERTNAMES.get(kind, "BittradeFeedAlert")
    labels = {"alertname": name}
    labels.update({k: str(data[k]) for k in ("pair", "kind", "direction") if data.get(k)})
    annotations = {"summary": str(data.get("detail") or name)}
    annotations.update({k: str(data[k]) for k in ("price", "tick_id") if data.get(k) is not None})
    starts = data.get("ts") or _rfc3339(at)
    group = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": NEVER_ENDS,
        "generatorURL": "",
        "fingerprint": hashlib.sha256(msg_id.encode()).hexdigest()[:16],
    }
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}:{" + group + "}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "bittrade-feed",
            "groupLabels": {"alertname": name},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "",
            "alerts": [alert],
        },
        separators=(",", ":"),
    ).encode()


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


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
