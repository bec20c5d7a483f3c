"""What one connection attempt needs: the stream URL, backoff, and how to read a refusal.

Everything here is stateless; ``FeedClient`` owns the loop that uses it.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import aiohttp

from bittrade_feed_client.errors import AuthError, ForbiddenError, ProtocolError, RequestRejected

STREAM_PATH = "/api/price-stream"
MAX_EXPONENT = 32
"""Backoff doubles at most this often (beyond it the cap rules anyway; avoids overflow)."""
MAX_RETRY_AFTER = 600.0
"""A ``Retry-After`` is honoured up to ten minutes; a larger one is a server bug."""
MAX_ERROR_BODY = 64 * 1024
"""Read at most this much of an error answer, for its detail."""


def daemon_url(url: str) -> SplitResult:
    """``url`` split, if it is an http(s) URL with a host; ``ValueError`` otherwise."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"{url!r} is not an http:// or https:// URL of a bittrade-feed daemon")
    return parts


def stream_url(url: str) -> str:
    """The stream endpoint for ``url``: a daemon's base URL gets ``/api/price-stream``."""
    parts = daemon_url(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path=STREAM_PATH)
    return urlunsplit(parts)


def backoff_delay(
    failures: int, floor: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait: ``floor`` plus full jitter up to ``min(cap, floor * 2**failures)``.

    The floor is the server's ``retry:``; the jitter spreads out the clients that all
    lost the same daemon at once, and widens with each failure in a row.
    """
    ceiling: float = min(cap, floor * 2 ** min(failures, MAX_EXPONENT))
    return floor + rand() * ceiling


@dataclass(frozen=True, slots=True)
class Drop:
    """Why a connection attempt ended, when reconnecting may help."""

    reason: str
    productive: bool = False
    """Whether it delivered events (then the backoff starts over)."""
    retry_after: float | None = None
    reauth: str = ""
    """The ``reauth`` event's reason when the daemon ended the stream for a new credential."""


NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)
"""Streams are long-lived; connect and idle timeouts are enforced around the calls."""


async def refused(resp: aiohttp.ClientResponse) -> Drop:
    """Classify a non-stream answer: raise when retrying cannot help, else a ``Drop``."""
    status = resp.status
    if status < 400:
        got = resp.headers.get("Content-Type", "no content type")
        raise ProtocolError(f"{resp.url} answered {status} with {got}, not text/event-stream")
    detail, doc = await problem_detail(resp)
    if status == 401:
        raise AuthError(detail)
    if status == 403:
        raise ForbiddenError(detail, refused_pairs(doc))
    if status in (408, 429) or status >= 500:
        return Drop(f"HTTP {status}: {detail}", retry_after=retry_after(resp))
    raise RequestRejected(status, detail)


async def problem_detail(resp: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    """The problem+json ``detail`` (else the start of the body, else the reason phrase),
    and the problem document itself (empty when the body is not one)."""
    try:
        body = await resp.content.read(MAX_ERROR_BODY)
    except (aiohttp.ClientError, OSError):
        body = b""
    text = body.decode("utf-8", "replace").strip()
    if "json" in resp.content_type:
        with contextlib.suppress(ValueError, RecursionError):
            doc = json.loads(text)
            if isinstance(doc, dict) and (doc.get("detail") or doc.get("title")):
                return str(doc.get("detail") or doc.get("title")), doc
    first_line = text.splitlines()[0][:200] if text else ""
    return first_line or resp.reason or "no detail given", {}


def refused_pairs(doc: dict[str, Any]) -> tuple[str, ...]:
    """The ``pairs`` a 403 problem names (strings only; anything else is ignored)."""
    pairs = doc.get("pairs")
    if not isinstance(pairs, list):
        return ()
    return tuple(p for p in pairs if isinstance(p, str))


def retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """The ``Retry-After`` seconds of an answer (the daemon sends seconds; a date is ignored)."""
    raw = resp.headers.get("Retry-After", "").strip()
    return min(float(raw), MAX_RETRY_AFTER) if raw.isascii() and raw.isdigit() else None


def describe(exc: BaseException) -> str:
    """A network error as one line for ``FeedClient.reason``."""
    if isinstance(exc, TimeoutError):
        return "timed out connecting"
    return str(exc) or type(exc).__name__


def normalise_pairs(pairs: Iterable[str] | None) -> tuple[str, ...]:
    """Upper-cased, de-duplicated pairs (a string may be comma-separated); ``None``: all."""
    if pairs is None:
        return ()
    if isinstance(pairs, str):
        pairs = pairs.split(",")
    names = tuple(dict.fromkeys(p.strip().upper() for p in pairs if p.strip()))
    if not names:
        raise ValueError("pairs is empty: pass None for every pair the daemon serves")
    return names
