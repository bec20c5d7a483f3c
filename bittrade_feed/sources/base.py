"""What every exchange source shares: the HTTP round trip and the checks on its answer.

A source module only says how to name a pair (``symbol``), where to ask (``url``) and
where the price sits in the body (``parse``). Everything that can go wrong on the way
is classified here, once, into the ``SourceError`` tree of ``bittrade_feed.errors``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, NoReturn

import aiohttp

from bittrade_feed.clock import Clock
from bittrade_feed.errors import (
    SourceBadBody,
    SourceGeoBlocked,
    SourceHTTPError,
    SourceRateLimited,
    SourceRejectedPrice,
    SourceTimeout,
    SourceUnavailable,
    SourceWrongPair,
)
from bittrade_feed.models import Quote, split_pair

FUTURE_TOLERANCE = 10.0
"""Seconds an exchange timestamp may lead our clock (clock skew) before it is refused."""

MAX_BODY_BYTES = 1 << 20
"""A ticker is a few hundred bytes; anything near this is not a ticker."""

_loads = functools.partial(json.loads, parse_float=Decimal)


class Source(ABC):
    """One exchange's public ticker for any pair it lists."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    quote_currencies: ClassVar[frozenset[str] | None] = None
    """The quote currencies this exchange lists; ``None`` means any."""
    max_quote_age: ClassVar[float] = 120.0
    """Seconds after which an exchange timestamp is too old to publish."""

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")

    def supports(self, pair: str) -> bool:
        """Whether this exchange can quote ``pair`` at all."""
        _, quote = split_pair(pair)
        return self.quote_currencies is None or quote in self.quote_currencies

    @abstractmethod
    def url(self, pair: str) -> str:
        """The full ticker URL for ``pair``."""

    @abstractmethod
    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Turn a decoded JSON body into a ``Quote``, or raise a ``SourceError``."""

    async def fetch(
        self, session: aiohttp.ClientSession, pair: str, timeout: float, clock: Clock
    ) -> Quote:
        """Ask the exchange once and return a validated quote."""
        body = await self._get_json(session, self.url(pair), timeout)
        quote = self.parse(pair, body, clock.time())
        return self.validate(quote)

    async def _get_json(self, session: aiohttp.ClientSession, url: str, timeout: float) -> Any:
        try:
            async with session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout),
                headers={"Accept": "application/json"},
                allow_redirects=False,
            ) as resp:
                raw = await _read_capped(resp.content, MAX_BODY_BYTES + 1)
                self._check_status(resp.status, resp.headers, raw)
                content_type = resp.headers.get("Content-Type", "")
        except TimeoutError as exc:
            raise SourceTimeout(self.name, f"no answer within {timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise SourceUnavailable(self.name, f"connection failed: {exc}") from exc
        if len(raw) > MAX_BODY_BYTES:
            raise SourceBadBody(self.name, "body larger than 1 MiB")
        return self.decode(raw, content_type)

    def _check_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        if status == 200:
            return
        snippet = _snippet(raw)
        if status in {429, 418}:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            raise SourceRateLimited(self.name, f"HTTP {status}: {snippet}", retry_after)
        if status == 451:
            raise SourceGeoBlocked(self.name, f"HTTP 451 (blocked for this location): {snippet}")
        if status >= 500:
            raise SourceUnavailable(self.name, f"HTTP {status}: {snippet}")
        raise SourceHTTPError(self.name, f"HTTP {status}: {snippet}", status)

    def decode(self, raw: bytes, content_type: str) -> Any:
        """Decode a 200 body as JSON with exact decimals; HTML and garbage are ``SourceBadBody``."""
        stripped = raw.lstrip()
        if "html" in content_type.lower() or stripped[:1] == b"<":
            # A CDN or WAF error page served with 200; the exchange itself is not answering.
            raise SourceBadBody(self.name, f"HTML page instead of JSON: {_snippet(raw)}")
        try:
            return _loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SourceBadBody(self.name, f"body is not JSON: {_snippet(raw)}") from exc

    def validate(self, quote: Quote) -> Quote:
        """Refuse prices that are not positive and finite, and stale or future timestamps."""
        if not quote.price.is_finite() or quote.price <= 0:
            raise SourceRejectedPrice(self.name, f"price {quote.price} is not positive and finite")
        if quote.exchange_ts is not None:
            age = quote.received_at - quote.exchange_ts
            if age > self.max_quote_age:
                raise SourceRejectedPrice(
                    self.name, f"quote is {age:.0f} s old (limit {self.max_quote_age:g} s)"
                )
            if age < -FUTURE_TOLERANCE:
                raise SourceRejectedPrice(
                    self.name, f"quote timestamp is {-age:.0f} s in the future"
                )
        return quote

    # Helpers for parse() implementations: each names what is missing.

    def body_error(
        self, detail: str, *, rate_limited: bool = False, retryable: bool = False
    ) -> NoReturn:
        """Raise for an error the exchange reported inside a 200 body."""
        message = f"error in 200: {detail}"
        if rate_limited:
            raise SourceRateLimited(self.name, message, None)
        raise SourceBadBody(self.name, message, retryable=retryable)

    def echoed(self, got: Any, asked: str, where: str) -> None:
        """``SourceWrongPair`` unless the instrument echoed back at ``where`` is ``asked``."""
        if got != asked:
            raise SourceWrongPair(self.name, f"asked for {asked}, got {where} = {got!r}")

    def field(self, body: Any, *path: str | int) -> Any:
        """Walk ``body`` along ``path``; a missing step is ``SourceBadBody`` naming it."""
        node = body
        walked = ""
        for step in path:
            walked += f"[{step}]" if isinstance(step, int) else f".{step}"
            try:
                if isinstance(step, int):
                    if not isinstance(node, Sequence) or isinstance(node, str):
                        raise LookupError
                    node = node[step]
                else:
                    if not isinstance(node, Mapping):
                        raise LookupError
                    node = node[step]
            except LookupError:
                raise SourceBadBody(self.name, f"missing field {walked.lstrip('.')}") from None
        return node

    def price(self, value: Any, where: str) -> Decimal:
        """A price from a JSON string or number, exactly; anything else is ``SourceBadBody``."""
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise SourceBadBody(self.name, f"{where} is {value!r}, not a decimal")
        try:
            price = Decimal(value)
        except InvalidOperation:
            raise SourceBadBody(self.name, f"{where} is {value!r}, not a decimal") from None
        return price

    def epoch(self, value: Any, where: str, *, millis: bool = False) -> float:
        """An epoch timestamp given as a number or a digit string."""
        try:
            seconds = float(Decimal(str(value)))
        except (InvalidOperation, ValueError):
            raise SourceBadBody(self.name, f"{where} is {value!r}, not a timestamp") from None
        if not math.isfinite(seconds):
            raise SourceBadBody(self.name, f"{where} is {value!r}, not a timestamp")
        return seconds / 1000 if millis else seconds


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); ``None`` if absent."""
    if not value:
        return None
    value = value.strip()
    # isdigit() alone also accepts digits like "²" that float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    # read(n) returns whatever has arrived, up to n bytes, not n bytes: loop to EOF or limit.
    raw = bytearray()
    while len(raw) < limit:
        chunk = await content.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def _snippet(raw: bytes, limit: int = 120) -> str:
    text = raw[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("..." if len(raw) > limit else "") if text else "(empty body)"
