"""What every exchange source shares: the HTTP round trip and the checks on its answer.

A source module only says how to name a pair (``symbol``), where to ask (``url``) and
where the price sits in the body (``parse``). Everything that can go wrong on the way
is classified here, once, into the ``SourceError`` tree of ``bittrade_feed.errors``.
"""

from __future__ import annotations

import functools
import json
import math
import reprlib
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
    SourceError,
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

MAX_PRICE = Decimal("1e15")
"""Prices must be below this: no pair trades anywhere near it, and Decimal stays exact."""
MAX_PRICE_DIGITS = 18
"""Significant digits a price may have (trailing zeros not counted)."""
MAX_PRICE_PLACES = 18
"""Decimal places a price may have, so the smallest price is 1e-18."""

MAX_RETRY_AFTER = 3600.0
"""The longest rest a ``Retry-After`` header can ask for; a bigger one is capped to this."""

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
        """Ask the exchange once and return a validated quote, or raise a ``SourceError``."""
        try:
            raw, content_type = await self._get(session, self.url(pair), timeout)
        except SourceError:
            raise
        except Exception as exc:
            # The boundary for the round trip: whatever aiohttp or the OS throws that the
            # handlers in _get did not foresee costs this source this cycle, nothing more.
            raise SourceUnavailable(self.name, f"request failed: {_describe(exc)}") from exc
        return self.read(pair, raw, content_type, clock.time())

    def read(self, pair: str, raw: bytes, content_type: str, received_at: float) -> Quote:
        """Decode, parse and validate one 200 body; every failure is a ``SourceError``."""
        try:
            return self.validate(self.parse(pair, self.decode(raw, content_type), received_at))
        except SourceError:
            raise
        except Exception as exc:
            # The boundary for the answer: a parser bug or a shape nobody foresaw (an int
            # where a list belongs, a number beyond Decimal's range) is a bad body, by name.
            raise SourceBadBody(self.name, f"unreadable answer: {_describe(exc)}") from exc

    async def _get(
        self, session: aiohttp.ClientSession, url: str, timeout: float
    ) -> tuple[bytes, str]:
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
        return raw, content_type

    def _check_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        if status == 200:
            return
        snippet = _snippet(raw)
        if status in {429, 418}:
            header = headers.get("Retry-After")
            retry_after = parse_retry_after(header)
            rest = (
                ""
                if retry_after is None
                else f" (Retry-After {_short(header)}: rest {retry_after:g} s)"
            )
            raise SourceRateLimited(self.name, f"HTTP {status}: {snippet}{rest}", retry_after)
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
        except RecursionError as exc:
            # json's C scanner recurses per nesting level: "[" * 50000 fits in the cap.
            raise SourceBadBody(self.name, "JSON nested too deeply") from exc
        except ArithmeticError as exc:
            # parse_float=Decimal refuses exponents past Decimal's range (1e9999999999999999999).
            raise SourceBadBody(self.name, f"a number out of range: {_snippet(raw)}") from exc

    def validate(self, quote: Quote) -> Quote:
        """Refuse prices that are not positive, finite and in bounds, and stale or future quotes."""
        problem = price_problem(quote.price)
        if problem:
            raise SourceRejectedPrice(self.name, problem)
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
        message = f"error in 200: {detail if len(detail) <= 200 else detail[:197] + '...'}"
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
            raise SourceBadBody(self.name, f"{where} is {_short(value)}, not a decimal")
        try:
            price = Decimal(value)
        except (InvalidOperation, ValueError):
            raise SourceBadBody(self.name, f"{where} is {_short(value)}, not a decimal") from None
        return price

    def epoch(self, value: Any, where: str, *, millis: bool = False) -> float:
        """An epoch timestamp given as a number or a digit string."""
        problem = f"{where} is {_short(value)}, not a timestamp"
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise SourceBadBody(self.name, problem)
        try:
            seconds = float(Decimal(str(value)))
        except (InvalidOperation, ValueError):
            raise SourceBadBody(self.name, problem) from None
        if not math.isfinite(seconds):
            raise SourceBadBody(self.name, problem)
        return seconds / 1000 if millis else seconds


def price_problem(price: Decimal) -> str:
    """Why ``price`` cannot be published (empty if it can): sign, finiteness and bounds."""
    if not price.is_finite() or price <= 0:
        return f"price {_short(price)} is not positive and finite"
    if price >= MAX_PRICE:
        return f"price {_short(price)} is not below the bound of {MAX_PRICE:f}"
    # Counted on the digit tuple, not via normalize(), which would round to the context.
    _, digits, exponent = price.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    zeros = len(digits) - len(bytes(digits).rstrip(b"\0"))
    significant, places = len(digits) - zeros, max(0, -(exponent + zeros))
    if significant > MAX_PRICE_DIGITS:
        return (
            f"price {_short(price)} has {significant} significant digits (limit {MAX_PRICE_DIGITS})"
        )
    if places > MAX_PRICE_PLACES:
        return f"price {_short(price)} has {places} decimal places (limit {MAX_PRICE_PLACES})"
    return ""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped at an hour.

    ``None`` when absent or unreadable (the breaker's own backoff applies then); a date in
    the past is 0.
    """
    if not value:
        return None
    value = value.strip()
    # isdigit() alone also accepts digits like "²" that float() refuses; more than 7 digits
    # is past the cap anyway, and int() of 5,000 digits would hit Python's digit limit.
    if value.isascii() and value.isdigit():
        return MAX_RETRY_AFTER if len(value) > 7 else min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    seconds = when - (time.time() if now is None else now)
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


async def _read_capped(content: aiohttp.StreamReader, limit: int) -> bytes:
    # read(n) returns whatever has arrived, up to n bytes, not n bytes: loop to EOF or limit.
    raw = bytearray()
    while len(raw) < limit:
        chunk = await content.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlong = 40


def _short(value: object) -> str:
    # A repr capped in length: a 1 MiB string must not end up whole in a log line.
    text = str(value) if isinstance(value, Decimal) else _repr.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(exc: BaseException) -> str:
    detail = str(exc) or "(no detail)"
    return f"{type(exc).__name__}: {detail if len(detail) <= 80 else detail[:77] + '...'}"


def _snippet(raw: bytes, limit: int = 120) -> str:
    text = raw[:limit].decode("utf-8", "replace").replace("\n", " ").strip()
    return text + ("..." if len(raw) > limit else "") if text else "(empty body)"
