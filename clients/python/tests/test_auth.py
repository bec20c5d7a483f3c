"""Credentials against stand-in servers that speak issue 13's wire: 401/403 problems, reauth.

The servers here answer as the daemon does with ``[auth]`` on: a 401 problem with
``WWW-Authenticate``, a 403 naming the refused pairs, and a ``reauth`` event followed by
the end of the stream. The client must refresh at most once per accepted token, resume
from ``Last-Event-ID`` after a reauth (no gap, no duplicate), and never log the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from bittrade_feed_client import (
    AuthError,
    FeedClient,
    FeedError,
    ForbiddenError,
    State,
    Tick,
    Unauthorized,
    subscribe,
)
from hypothesis import given, settings
from hypothesis import strategies as st

WAIT = 5.0
"""Upper bound for anything that should happen at once; tests finish long before."""
PAIR = "BTC-USDT"
OLD = "old-token"
SECRET = "btk_a1b2c3d4_Zq9xSecretPartThatMustNeverBeLogged"  # noqa: S105 (a test value)


def problem(status: int, detail: str, **extra: object) -> web.Response:
    """A problem+json answer, as ``bittrade_feed/server/problems.py`` writes it."""
    title = {401: "Unauthorized", 403: "Forbidden"}[status]
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="bittrade-feed"'} if status == 401 else {}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def price(tick_id: int) -> bytes:
    """One ``price`` event as the daemon frames it."""
    data = json.dumps(
        {
            "id": tick_id,
            "pair": PAIR,
            "price": f"{100 + tick_id}.5",
            "ts": "2026-12-01T23:00:00.000Z",
            "sources": ["kraken"],
        }
    )
    return f"id: {tick_id}\nevent: price\ndata: {data}\n\n".encode()


def reauth(reason: str = "expired") -> bytes:
    """The event the daemon sends before it closes a stream whose credential ended."""
    return f'event: reauth\ndata: {{"reason":"{reason}"}}\n\n'.encode()


@dataclass
class Wire:
    """A stand-in daemon: answer ``i`` of ``script`` serves request ``i``; then 204.

    Answers: ``"401"``, ``"403"``, ``"close"`` (two new prices, then the stream ends) or
    ``"reauth"`` (two new prices, a reauth event, then the end). Prices continue from the
    request's ``Last-Event-ID``, as the daemon's replay does, so a client that resumes
    right sees every id once.
    """

    script: list[str]
    requests: list[dict[str, str]] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    """``time.monotonic()`` of each request."""
    retry_ms: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the headers and play the next answer."""
        self.requests.append(dict(request.headers))
        self.at.append(time.monotonic())
        n = len(self.requests) - 1
        answer = self.script[n] if n < len(self.script) else "end"
        if answer == "end":
            return web.Response(status=204)
        if answer == "401":
            return problem(401, "credential expired; log in again")
        if answer == "403":
            return problem(403, "not granted: ETH-USD", pairs=["ETH-USD"])
        last = int(request.headers.get("Last-Event-ID", "0") or 0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"retry: {self.retry_ms}\n\n".encode() + price(last + 1) + price(last + 2))
        if answer == "reauth":
            await resp.write(reauth())
        return resp


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    """A ``Wire`` on a loopback port; set ``wire.script`` before connecting."""
    served = Wire([])
    app = web.Application()
    app.router.add_get("/api/price-stream", served.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    served.url = str(server.make_url("/"))
    yield served
    await server.close()


class Provider:
    """A token provider handing out ``tok-1``, ``tok-2``, ... and counting its calls."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.fail = fail

    async def __call__(self) -> str:
        """The next token (or the configured failure)."""
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return f"tok-{self.calls}"


async def drain(feed: FeedClient, out: list[Tick] | None = None) -> list[Tick]:
    """Every tick until the subscription ends (bounded by ``WAIT``), also into ``out``."""
    out = [] if out is None else out
    async with asyncio.timeout(WAIT):
        async for tick in feed:
            out.append(tick)
    return out


def fast(url: str, **kwargs: object) -> FeedClient:
    """A client whose backoff is nothing, so scripts run at once."""
    return FeedClient(url, reconnect_delay=0, max_delay=0, **kwargs)  # type: ignore[arg-type]


async def test_api_key_is_sent_as_bearer(wire: Wire) -> None:
    """``api_key=`` goes out as ``Authorization: Bearer``, like ``token=``."""
    wire.script = ["close"]
    async with fast(wire.url, api_key=SECRET) as feed:
        ticks = await drain(feed)
    assert [t.id for t in ticks] == [1, 2]
    assert wire.requests[0]["Authorization"] == f"Bearer {SECRET}"


async def test_no_credentials_sends_no_authorization_header(wire: Wire) -> None:
    """Without credentials the request is exactly as before issue 13."""
    wire.script = ["close"]
    async with fast(wire.url) as feed:
        await drain(feed)
    assert "Authorization" not in wire.requests[0]


def test_token_and_api_key_together_are_refused() -> None:
    """Two credentials at once is a caller mistake, said at construction."""
    with pytest.raises(ValueError, match="not both"):
        FeedClient("http://127.0.0.1:1", token=OLD, api_key=SECRET)


async def test_401_without_provider_is_final_auth_error(wire: Wire) -> None:
    """A 401 ends the subscription with AuthError (an Unauthorized), after one request."""
    wire.script = ["401"]
    async with fast(wire.url, api_key=SECRET) as feed:
        with pytest.raises(AuthError) as caught:
            await drain(feed)
    assert isinstance(caught.value, Unauthorized)
    assert caught.value.status == 401
    assert caught.value.detail == "credential expired; log in again"
    assert feed.state is State.CLOSED
    assert len(wire.requests) == 1


async def test_403_is_forbidden_error_with_the_refused_pairs(wire: Wire) -> None:
    """A 403 is final even with a provider, and carries the pairs the daemon refused."""
    wire.script = ["403"]
    provider = Provider()
    async with fast(wire.url, pairs=["ETH-USD"], token_provider=provider) as feed:
        with pytest.raises(ForbiddenError) as caught:
            await drain(feed)
    assert caught.value.pairs == ("ETH-USD",)
    assert caught.value.status == 403
    assert "ETH-USD" in caught.value.detail
    assert len(wire.requests) == 1
    assert provider.calls == 1  # the first token only; a 403 is not a token problem


async def test_reauth_refreshes_and_resumes_without_gap_or_duplicate(wire: Wire) -> None:
    """reauth: the provider is asked, the reconnect at once sends the new token and the id."""
    wire.script = ["reauth", "close"]
    provider = Provider()
    # A 30 s backoff floor: only the immediate reauth handover finishes within WAIT.
    feed = FeedClient(wire.url, token_provider=provider, reconnect_delay=30, max_delay=0)
    async with feed:
        ticks = await drain(feed)
    assert [t.id for t in ticks] == [1, 2, 3, 4]
    assert provider.calls == 2
    first, second, _ = wire.requests
    assert first["Authorization"] == "Bearer tok-1"
    assert second["Authorization"] == "Bearer tok-2"
    assert second["Last-Event-ID"] == "2"


async def test_a_second_reauth_soon_after_waits_for_backoff(wire: Wire) -> None:
    """The first reauth reconnects at once; one again within REAUTH_PACE waits retry:."""
    wire.script = ["reauth", "reauth", "close"]
    wire.retry_ms = 400
    async with FeedClient(wire.url, token_provider=Provider(), max_delay=0) as feed:
        ticks = await drain(feed)
    assert [t.id for t in ticks] == [1, 2, 3, 4, 5, 6]
    first, second, third = wire.at[1] - wire.at[0], wire.at[2] - wire.at[1], wire.at[3] - wire.at[2]
    assert first < 0.3, "the first handover is immediate"
    assert second >= 0.4, "the second, 0 s after the first, waits the server's retry"
    assert third >= 0.4, "an ordinary end of stream waits retry: as before"


async def test_reauth_without_provider_reconnects_then_stops_on_401(wire: Wire) -> None:
    """A static credential is retried once after reauth; the daemon's 401 then ends it."""
    wire.script = ["reauth", "401"]
    states: list[State] = []
    async with fast(wire.url, api_key=SECRET, on_state=lambda c: states.append(c.state)) as feed:
        ticks: list[Tick] = []
        with pytest.raises(AuthError):
            await drain(feed, ticks)
    assert [t.id for t in ticks] == [1, 2]
    assert len(wire.requests) == 2
    assert wire.requests[1]["Last-Event-ID"] == "2"
    assert State.RECONNECTING in states


async def test_401_with_provider_refreshes_once_then_gives_up(wire: Wire) -> None:
    """A static token refused: one refresh; the fresh token refused too: AuthError."""
    wire.script = ["401", "401", "close"]
    provider = Provider()
    async with fast(wire.url, token=OLD, token_provider=provider) as feed:
        with pytest.raises(AuthError):
            await drain(feed)
    assert provider.calls == 1
    assert [r["Authorization"] for r in wire.requests] == [f"Bearer {OLD}", "Bearer tok-1"]


async def test_401_with_provider_then_accepted_token_streams(wire: Wire) -> None:
    """A refreshed token that is accepted carries on with no error."""
    wire.script = ["401", "close"]
    provider = Provider()
    async with fast(wire.url, token=OLD, token_provider=provider) as feed:
        ticks = await drain(feed)
    assert [t.id for t in ticks] == [1, 2]
    assert feed.error is None


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (Provider(fail=RuntimeError("vault sealed")), "token_provider failed: RuntimeError"),
        (lambda: "", "returned str, not a token"),
        (lambda: None, "returned NoneType, not a token"),
    ],
)
async def test_a_failing_provider_is_an_auth_error(
    wire: Wire, provider: object, message: str
) -> None:
    """The provider's failure ends the subscription with AuthError, before any request."""
    wire.script = ["close"]
    async with fast(wire.url, token_provider=provider) as feed:
        with pytest.raises(AuthError, match=message):
            await drain(feed)
    assert wire.requests == []


async def test_a_plain_function_provider_works(wire: Wire) -> None:
    """A synchronous provider is called as is."""
    wire.script = ["close"]
    async with fast(wire.url, token_provider=lambda: "plain") as feed:
        await drain(feed)
    assert wire.requests[0]["Authorization"] == "Bearer plain"


async def test_the_token_is_never_logged_nor_in_errors(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole session (stream, reauth, 401) at DEBUG: the secret appears nowhere."""
    wire.script = ["reauth", "401"]
    caplog.set_level(logging.DEBUG)
    async with fast(wire.url, api_key=SECRET) as feed:
        with pytest.raises(AuthError) as caught:
            await drain(feed)
    secret = SECRET.rsplit("_", maxsplit=1)[-1]
    assert caplog.records, "the client logged its reconnects"
    for record in caplog.records:
        assert secret not in record.getMessage()
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert secret not in feed.reason
    assert secret not in repr(feed._credentials)


async def test_sync_subscribe_takes_the_credentials(wire: Wire) -> None:
    """``subscribe(..., api_key=...)`` sends it, and raises AuthError from the for loop."""
    wire.script = ["close", "401"]

    def run() -> list[int]:
        ids: list[int] = []
        ticks = subscribe(wire.url, api_key=SECRET, reconnect_delay=0, max_delay=0)
        with pytest.raises(AuthError):
            ids.extend(tick.id for tick in ticks)
        return ids

    assert await asyncio.to_thread(run) == [1, 2]
    assert wire.requests[0]["Authorization"] == f"Bearer {SECRET}"


# -- the rules, over any sequence of answers ------------------------------------------------


def expected(script: list[str], provider: bool, initial: bool) -> tuple[str, int, int]:
    """The model: how the subscription ends, provider calls, requests made."""
    calls = 0
    untested = False
    if provider and not initial:
        calls, untested = 1, True
    for n, answer in enumerate(script):
        if answer == "401":
            if provider and not untested:
                calls, untested = calls + 1, True
                continue
            return "AuthError", calls, n + 1
        if answer == "403":
            return "ForbiddenError", calls, n + 1
        untested = False
        if answer == "reauth" and provider:
            calls, untested = calls + 1, True
    return "end", calls, len(script) + 1


ANSWERS = st.lists(st.sampled_from(["401", "403", "close", "reauth"]), max_size=8)


@settings(max_examples=60, deadline=None)
@given(script=ANSWERS, provider=st.booleans(), initial=st.booleans())
def test_refresh_rules_hold_for_any_answers(
    script: list[str], provider: bool, initial: bool
) -> None:
    """Never two refreshes without an accepted token between; 401 final otherwise; 403
    always final; every id once and in order across reauths and reconnects."""

    async def run() -> tuple[str, int, list[int], Wire]:
        served = Wire(list(script))
        app = web.Application()
        app.router.add_get("/api/price-stream", served.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        calls = Provider()
        try:
            feed = fast(
                str(server.make_url("/")),
                token="static" if initial else None,
                token_provider=calls if provider else None,
            )
            ids: list[int] = []
            outcome = "end"
            async with feed:
                try:
                    ids = [t.id for t in await drain(feed)]
                except FeedError as exc:
                    outcome = type(exc).__name__
            return outcome, calls.calls, ids, served
        finally:
            await server.close()

    outcome, calls, ids, served = asyncio.run(run())
    want_outcome, want_calls, want_requests = expected(script, provider, initial)
    assert (outcome, calls, len(served.requests)) == (want_outcome, want_calls, want_requests)
    if outcome == "end":
        assert ids == list(range(1, len(ids) + 1)), "no gap, no duplicate"
