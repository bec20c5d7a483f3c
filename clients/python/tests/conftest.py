"""Fixtures: the real daemon on loopback (restartable), and tiny scripted servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from bittrade_feed.clock import Clock
from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, HUB
from bittrade_feed.sources import SOURCES
from tests.daemon import PAIR, daemon_config, fx  # noqa: F401 (fixtures, used by name)
from tests.fakeclock import FakeClock
from tests.fakeexchange import FakeExchanges

USABLE_SOURCES = tuple(s for s in ("kraken", "bitfinex") if s in SOURCES)
"""The fake exchanges whose parsers the daemon has (bitfinex may not be registered yet)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WAIT = 5.0
"""Upper bound for anything that should happen at once; tests finish long before."""


class Daemon:
    """The real daemon app on a fixed loopback port, restartable on the same database."""

    def __init__(self, config: Config, exchanges: FakeExchanges, clock: Clock | None) -> None:
        self.config = config
        self.fx = exchanges
        self.clock = clock
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.pair = PAIR

    async def start(self) -> None:
        """Open a fresh app (same config and database) and listen (same port once known)."""
        await self.open()
        await self.listen()

    async def open(self) -> None:
        """Start the app (database, hub, fetcher) without listening yet."""
        app = create_app(self.config, fetch=False, clock=self.clock)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()

    async def listen(self) -> None:
        """Accept connections."""
        assert self.runner is not None
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        """Shut the daemon down the way SIGTERM would (streams closed, database closed)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def app(self) -> web.Application:
        """The running application."""
        assert self.runner is not None
        return self.runner.app

    @property
    def url(self) -> str:
        """The daemon's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def tick(self, price: str = "73400.2") -> int:
        """Make every exchange quote ``price`` and run one fetch cycle; the new max id."""
        for name in USABLE_SOURCES:
            self.fx.price(name, price)
        await self.app[FETCHER].run_cycle()
        return self.app[HUB].max_id

    async def fail(self) -> None:
        """Make every exchange fail and run one fetch cycle (no quorum)."""
        for name in USABLE_SOURCES:
            self.fx.answer(name, status=500)
        await self.app[FETCHER].run_cycle()


async def _eventually(check: Callable[[], object]) -> None:
    # Polling is the point: latest() and friends have no change notification.
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.fixture
def eventually() -> Callable[[Callable[[], object]], Awaitable[None]]:
    """``await eventually(lambda: ...)``: poll until true, failing after a few seconds."""
    return _eventually


@pytest.fixture
async def daemon_factory(
    daemon_config: Callable[..., Config],  # noqa: F811
    fx: FakeExchanges,  # noqa: F811
) -> AsyncIterator[Callable[..., Awaitable[Daemon]]]:
    """Start daemons: ``await daemon_factory(clock=..., feed={...})``; stopped at the end."""
    started: list[Daemon] = []

    async def start(clock: Clock | None = None, **sections: Any) -> Daemon:
        # A short retry keeps reconnect tests fast; the client honours it as its minimum.
        sections["stream"] = {"retry_ms": 100, **sections.get("stream", {})}
        daemon = Daemon(daemon_config(USABLE_SOURCES, **sections), fx, clock)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()


@pytest.fixture
async def daemon(daemon_factory: Callable[..., Awaitable[Daemon]]) -> Daemon:
    """One running daemon with one price already stored."""
    running = await daemon_factory()
    await running.tick("73380.5")
    return running


@pytest.fixture
async def stale_daemon(daemon_factory: Callable[..., Awaitable[Daemon]]) -> Daemon:
    """A daemon whose one pair has a price but went stale (no quorum past stale_after)."""
    clock = FakeClock()
    running = await daemon_factory(clock=clock, feed={"stale_after": 1.0})
    await running.tick()
    clock.jump(2)  # two seconds pass (both clocks): the price is now older than stale_after
    await running.fail()
    return running


class Scripted:
    """A stand-in server whose n-th request gets the n-th handler (the last one repeats)."""

    def __init__(self, handlers: tuple[Handler, ...]) -> None:
        self.handlers = handlers
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request headers and answer with the next handler."""
        self.requests.append(dict(request.headers))
        handler = self.handlers[min(len(self.requests), len(self.handlers)) - 1]
        return await handler(request)


class ScriptedServers:
    """Builds scripted servers and the handlers they play (tests reach it as a fixture)."""

    def __init__(self, aiohttp_server: AiohttpServer) -> None:
        self._aiohttp_server = aiohttp_server

    async def start(self, *handlers: Handler) -> Scripted:
        """Serve ``handlers`` at the stream path of a new loopback server."""
        script = Scripted(handlers)
        app = web.Application()
        app.router.add_get("/api/price-stream", script.handle)
        server = await self._aiohttp_server(app)
        script.url = str(server.make_url("/"))
        return script

    @staticmethod
    def answer(
        status: int, body: str = "", content_type: str = "application/problem+json"
    ) -> Handler:
        """A handler that answers with a fixed status and body."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text=body or None, content_type=content_type)

        return handle

    @staticmethod
    def stream(*chunks: bytes, pause: float = 0.0, hold: float = 0.0) -> Handler:
        """A handler that sends an event stream in chunks ``pause`` apart, then holds it."""

        async def handle(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for chunk in chunks:
                await resp.write(chunk)
                await asyncio.sleep(pause)
            await asyncio.sleep(hold)
            return resp

        return handle

    @staticmethod
    def price(tick_id: int, price: str = "100.5", pair: str = PAIR) -> bytes:
        """One ``price`` event as the daemon frames it."""
        data = (
            f'{{"id":{tick_id},"pair":"{pair}","price":"{price}",'
            f'"ts":"2026-11-23T20:31:00.123Z","sources":["kraken"]}}'
        )
        return f"id: {tick_id}\nevent: price\ndata: {data}\n\n".encode()


@pytest.fixture
def scripted(aiohttp_server: AiohttpServer) -> ScriptedServers:
    """Scripted stand-in servers for answers the real daemon never gives (401, 204, ...)."""
    return ScriptedServers(aiohttp_server)
