"""The shared HTTP round trip, against a real loopback server playing an exchange.

The server plays Kraken (any source would do: the round trip is the same for all); each
test scripts one answer and checks which ``SourceError`` the answer becomes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from pytest_aiohttp import AiohttpServer

from bittrade_feed.errors import (
    SourceBadBody,
    SourceGeoBlocked,
    SourceHTTPError,
    SourceRateLimited,
    SourceRejectedPrice,
    SourceTimeout,
    SourceUnavailable,
)
from bittrade_feed.models import Quote
from bittrade_feed.sources import REAL_SOURCES, SOURCES
from bittrade_feed.sources.base import FUTURE_TOLERANCE, MAX_BODY_BYTES
from bittrade_feed.sources.kraken import Kraken
from tests.conftest import documented, recorded
from tests.fakeclock import FakeClock

PAIR = "BTC-USDT"
TIMEOUT = 0.2
"""For the answer meant to time out; every other answer gets ``PATIENT`` (a loaded machine)."""
PATIENT = 10.0
CLOUDFLARE_403 = (
    b"<!DOCTYPE html><html><head><title>Access denied | api.example.com used Cloudflare"
    b"</title></head><body>Error 1020</body></html>"
)


@dataclass
class Reply:
    """What the fake exchange answers next."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Exchange:
    """A loopback server with a scripted reply, and the paths it was asked for."""

    url: str
    reply: Reply = field(default_factory=Reply)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
async def exchange(aiohttp_server: AiohttpServer) -> Exchange:
    """A running fake exchange; set ``.reply`` before fetching."""
    state = Exchange(url="")

    async def handle(request: web.Request) -> web.Response:
        state.paths.append(request.path_qs)
        reply = state.reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("/"))
    return state


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as client:
        yield client


async def fetch(
    exchange: Exchange, session: aiohttp.ClientSession, reply: Reply, timeout: float = PATIENT
) -> Quote:
    """Script ``reply`` and fetch BTC-USDT from the fake exchange once."""
    exchange.reply = reply
    source = Kraken(exchange.url)
    return await source.fetch(session, PAIR, timeout, FakeClock())


def kraken_body() -> bytes:
    """The recorded Kraken answer, as bytes on the wire."""
    return json.dumps(recorded("kraken")).encode()


# The round trip.


async def test_recorded_body_becomes_quote(exchange, session) -> None:
    """A 200 with the recorded body is a quote with the exact recorded price."""
    quote = await fetch(exchange, session, Reply(body=kraken_body()))
    assert quote.price == Decimal("73380.60000")
    assert str(quote.price) == "73380.60000"
    assert quote.source == "kraken"
    assert quote.received_at == FakeClock().time()
    assert exchange.paths == ["/0/public/Ticker?pair=XBTUSDT"]


async def test_body_in_many_chunks_is_read_whole(exchange, session) -> None:
    """A valid body far larger than one read chunk (but under 1 MiB) is read to the end."""
    padded = b'{"pad": "' + b"x" * (512 * 1024) + b'", ' + kraken_body()[1:]
    quote = await fetch(exchange, session, Reply(body=padded))
    assert quote.price == Decimal("73380.60000")


# Status codes.


async def test_429_with_retry_after_seconds(exchange, session) -> None:
    """429 with ``Retry-After: 7`` is rate limited for 7 s."""
    reply = Reply(status=429, body=b'{"error":"slow down"}', headers={"Retry-After": "7"})
    with pytest.raises(SourceRateLimited, match="HTTP 429") as info:
        await fetch(exchange, session, reply)
    assert info.value.retry_after == 7.0
    assert not info.value.retryable


async def test_429_with_retry_after_http_date(exchange, session) -> None:
    """429 with an HTTP-date ``Retry-After`` waits until that date."""
    when = datetime.now(UTC) + timedelta(seconds=30)
    reply = Reply(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(SourceRateLimited) as info:
        await fetch(exchange, session, reply)
    assert info.value.retry_after is not None
    assert 25.0 < info.value.retry_after <= 30.0


async def test_418_is_rate_limited(exchange, session) -> None:
    """418 (Binance's IP ban after ignored 429s) is rate limited, without a delay if none given."""
    body = b'{"code":-1003,"msg":"Way too many requests; IP banned until 1700000000000."}'
    with pytest.raises(SourceRateLimited, match="IP banned") as info:
        await fetch(exchange, session, Reply(status=418, body=body))
    assert info.value.retry_after is None


async def test_451_is_geo_blocked(exchange, session) -> None:
    """451 is geo-blocked and not retryable."""
    body = b'{"code":0,"msg":"Service unavailable from a restricted location"}'
    with pytest.raises(SourceGeoBlocked, match="restricted location") as info:
        await fetch(exchange, session, Reply(status=451, body=body))
    assert not info.value.retryable


@pytest.mark.parametrize("status", [500, 502, 503, 520])
async def test_5xx_is_unavailable(exchange, session, status: int) -> None:
    """Any 5xx (including Cloudflare's 520) is unavailable and retryable."""
    with pytest.raises(SourceUnavailable, match=f"HTTP {status}") as info:
        await fetch(exchange, session, Reply(status=status, body=b"upstream down"))
    assert info.value.retryable


@pytest.mark.parametrize("status", [403, 404])
async def test_other_4xx_is_http_error(exchange, session, status: int) -> None:
    """403 and 404 are HTTP errors that keep the status and are not retried."""
    with pytest.raises(SourceHTTPError, match=f"HTTP {status}: nope") as info:
        await fetch(exchange, session, Reply(status=status, body=b"nope"))
    assert info.value.status == status
    assert not info.value.retryable


async def test_cloudflare_html_403_is_http_error(exchange, session) -> None:
    """A Cloudflare "Access denied" HTML page with 403 is an HTTP error, not a body problem."""
    reply = Reply(status=403, body=CLOUDFLARE_403, content_type="text/html")
    with pytest.raises(SourceHTTPError, match="Access denied") as info:
        await fetch(exchange, session, reply)
    assert info.value.status == 403


async def test_redirect_is_not_followed(exchange, session) -> None:
    """A redirect is an HTTP error: a ticker that moved is not silently followed."""
    reply = Reply(status=301, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    with pytest.raises(SourceHTTPError, match="HTTP 301"):
        await fetch(exchange, session, reply)


# Bodies that are not the JSON we expect.


async def test_html_page_with_200_is_bad_body(exchange, session) -> None:
    """An HTML page served with 200 (a CDN error page) is a bad body."""
    reply = Reply(body=b"<html><body>520: Web server error</body></html>", content_type="text/html")
    with pytest.raises(SourceBadBody, match="HTML page instead of JSON") as info:
        await fetch(exchange, session, reply)
    assert not info.value.retryable


async def test_html_labelled_as_json_is_bad_body(exchange, session) -> None:
    """A body that starts with ``<`` is HTML whatever its Content-Type says."""
    with pytest.raises(SourceBadBody, match="HTML page"):
        await fetch(exchange, session, Reply(body=b"  <!DOCTYPE html><p>maintenance</p>"))


async def test_malformed_json_is_bad_body(exchange, session) -> None:
    """A body that is not valid JSON is a bad body quoting its start."""
    with pytest.raises(SourceBadBody, match=r'body is not JSON: \{"error": \[\]'):
        await fetch(exchange, session, Reply(body=b'{"error": [], "result": {'))


async def test_empty_body_is_bad_body(exchange, session) -> None:
    """An empty 200 body is a bad body that says it was empty."""
    with pytest.raises(SourceBadBody, match=r"\(empty body\)"):
        await fetch(exchange, session, Reply(body=b""))


async def test_non_utf8_body_is_bad_body(exchange, session) -> None:
    """Bytes that are not UTF-8 are a bad body, not a crash."""
    with pytest.raises(SourceBadBody, match="not JSON"):
        await fetch(exchange, session, Reply(body=b"\xff\xfe{}"))


async def test_body_over_1_mib_is_bad_body(exchange, session) -> None:
    """A body larger than 1 MiB is refused without decoding it."""
    huge = b'{"error": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with pytest.raises(SourceBadBody, match="larger than 1 MiB"):
        await fetch(exchange, session, Reply(body=huge))


# The connection.


async def test_slow_answer_is_timeout(exchange, session) -> None:
    """An exchange that answers after the timeout is a retryable timeout."""
    started = time.monotonic()
    with pytest.raises(SourceTimeout, match=r"no answer within 0\.2 s") as info:
        await fetch(exchange, session, Reply(body=kraken_body(), delay=2.0), TIMEOUT)
    assert time.monotonic() - started < 1.5
    assert info.value.retryable


async def test_connection_refused_is_unavailable(session) -> None:
    """Nothing listening on the port is unavailable and retryable."""
    source = Kraken(f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(SourceUnavailable, match="connection failed") as info:
        await source.fetch(session, PAIR, TIMEOUT, FakeClock())
    assert info.value.retryable


# The registry.


def test_sources_are_registered_in_order() -> None:
    """Every source is registered under its own name, in the documented order."""
    assert list(SOURCES) == [
        "coinbase",
        "coinbase_exchange",
        "kraken",
        "bitstamp",
        "gemini",
        "bitfinex",
        "coingecko",
        "okx",
        "binance",
        "simulated",
    ]
    assert all(cls.name == name for name, cls in SOURCES.items())


def test_real_sources_exclude_the_simulator() -> None:
    """The simulator is never a default source."""
    assert "simulated" not in REAL_SOURCES
    assert len(REAL_SOURCES) == len(SOURCES) - 1


def test_every_real_source_has_an_https_production_host() -> None:
    """Every real source defaults to its exchange's https host, with no trailing slash."""
    for name in REAL_SOURCES:
        url = SOURCES[name]().base_url
        assert url.startswith("https://"), name
        assert not url.endswith("/"), name


# Every source obeys the same checks on price and time.


# (source, pair, body, path to the price in the body)
EVERY_SOURCE: dict[str, tuple[str, Any, tuple[str | int, ...]]] = {
    "coinbase": ("BTC-USD", documented("coinbase", "spot"), ("data", "amount")),
    "coinbase_exchange": ("BTC-USDT", recorded("coinbaseexchange"), ("price",)),
    "kraken": ("BTC-USDT", recorded("kraken"), ("result", "XBTUSDT", "c", 0)),
    "bitstamp": ("BTC-USDT", recorded("bitstamp"), ("last",)),
    "gemini": ("BTC-USDT", recorded("gemini"), ("last",)),
    "bitfinex": ("BTC-USDT", recorded("bitfinex"), (6,)),
    "coingecko": ("BTC-USD", documented("coingecko", "price"), ("bitcoin", "usd")),
    "okx": ("BTC-USDT", recorded("okx"), ("data", 0, "last")),
    "binance": ("BTC-USDT", recorded("binance"), ("lastPrice",)),
}
TIMESTAMPED = ["coinbase_exchange", "bitstamp", "gemini", "coingecko", "okx", "binance"]


def replace_at(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``body`` with the node at ``path`` (the root if empty) set to ``value``."""
    if not path:
        return value
    body = copy.deepcopy(body)
    node = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return body


def _with_price(name: str, value: Any) -> Any:
    _, body, path = EVERY_SOURCE[name]
    return replace_at(body, path, value)


def _checked(name: str, body: Any, received_at: float | None = None) -> Quote:
    """Parse and validate ``body``, received just after the quote's own timestamp."""
    source = SOURCES[name]()
    pair = EVERY_SOURCE[name][0]
    if received_at is None:
        received_at = (source.parse(pair, EVERY_SOURCE[name][1], 0.0).exchange_ts or 0.0) + 1.0
    return source.validate(source.parse(pair, body, received_at))


def test_every_real_source_is_covered() -> None:
    """The cross-source checks below cover every real source."""
    assert set(EVERY_SOURCE) == set(REAL_SOURCES)


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@pytest.mark.parametrize(
    "value", ["0", "0.00", "-1", "-73380.6", Decimal(0), 0, -5, "NaN", "Infinity", "-Infinity"]
)
def test_non_positive_or_non_finite_price_is_rejected(name: str, value: Any) -> None:
    """Zero, negative, NaN and infinite prices parse but are refused by validation."""
    with pytest.raises(SourceRejectedPrice, match="not positive and finite"):
        _checked(name, _with_price(name, value))


@pytest.mark.parametrize("name", list(EVERY_SOURCE))
@pytest.mark.parametrize("value", ["abc", "", "73,380.6", True, False, None, [], {}, 1.5])
def test_non_decimal_price_is_bad_body(name: str, value: Any) -> None:
    """A price that is not a decimal string or JSON number is a bad body naming the field."""
    with pytest.raises(SourceBadBody, match=r"is .*, not a decimal"):
        _checked(name, _with_price(name, value))


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_stale_quote_is_rejected(name: str) -> None:
    """A quote older than the source's max_quote_age is refused."""
    source = SOURCES[name]()
    pair, body, _ = EVERY_SOURCE[name]
    ts = source.parse(pair, body, 0.0).exchange_ts
    assert ts is not None
    fresh = source.parse(pair, body, ts + source.max_quote_age - 1)
    assert source.validate(fresh) is fresh
    with pytest.raises(SourceRejectedPrice, match="s old"):
        source.validate(source.parse(pair, body, ts + source.max_quote_age + 1))


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_future_quote_is_rejected(name: str) -> None:
    """A quote more than 10 s ahead of our clock is refused; less is clock skew."""
    source = SOURCES[name]()
    pair, body, _ = EVERY_SOURCE[name]
    ts = source.parse(pair, body, 0.0).exchange_ts
    assert ts is not None
    skewed = source.parse(pair, body, ts - FUTURE_TOLERANCE + 1)
    assert source.validate(skewed) is skewed
    with pytest.raises(SourceRejectedPrice, match="in the future"):
        source.validate(source.parse(pair, body, ts - FUTURE_TOLERANCE - 1))
