"""The dashboard in headless Chromium, against the real daemon and fake exchanges.

Debian's chromium (``scripts/install-browser.sh``) is driven by Playwright for Python,
which talks to the browser over CDP and downloads nothing. Screenshots of each state go
to ``artifacts/`` (gitignored) for people to look at.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from bittrade_feed.auth.keys import KeyStore, new_key, write_key_file
from bittrade_feed.auth.scopes import parse_scopes
from bittrade_feed.config import Config
from bittrade_feed.models import SIMULATED_SOURCE, TickDraft
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER, STORE
from tests.daemon import PAIR
from tests.fakeexchange import Answer, FakeExchanges

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CLIENT_SOURCE = ROOT / "clients" / "js" / "src" / "index.js"
WAIT_MS = 10_000

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} missing: CI must run scripts/install-browser.sh", pytrace=False)
    pytest.skip(f"{CHROMIUM} missing: run scripts/install-browser.sh", allow_module_level=True)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Daemon:
    """The daemon app on a fixed port, so it can be stopped and started again."""

    config: Config
    port: int = field(default_factory=free_port)
    runner: web.AppRunner | None = None
    fetch: bool = True
    """Run the fetch loop; without it the test drives cycles (``app[FETCHER].run_cycle()``)."""

    @property
    def url(self) -> str:
        """The dashboard's address."""
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Serve a new app (same config, so same database), with the real fetch loop or not."""
        self.runner = web.AppRunner(
            create_app(self.config, fetch=self.fetch),
            handle_signals=False,
            shutdown_timeout=2,
            handler_cancellation=True,
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    @property
    def app(self) -> web.Application:
        """The running application."""
        assert self.runner is not None
        return self.runner.app

    async def stop(self) -> None:
        """Shut down as on SIGTERM: streams are closed, the port is released."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class Console:
    """Everything the page reported as an error."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.errors.append(f"console {msg.type}: {msg.text} at {msg.location}")

    def on_error(self, exc: Exception) -> None:
        self.errors.append(f"uncaught: {exc}")


@pytest.fixture
async def daemon(daemon_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    """The daemon fetching every second from the fake exchanges; stale after 2 s."""
    feed = {"interval": 1.0, "stale_after": 2.0}
    server = Daemon(daemon_config(feed=feed))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield chromium
        await chromium.close()


@pytest.fixture
def console() -> Console:
    """Collects console errors and uncaught exceptions; each test asserts it stays empty."""
    return Console()


async def open_page(
    browser: Browser,
    daemon: Daemon,
    console: Console,
    prepare: Callable[[Page], Awaitable[None]] | None = None,
    **ctx: Any,
) -> Page:
    """A fresh page on the dashboard, refusing every request that leaves the daemon;
    ``prepare`` runs before the page loads (permissions, scripts run before the page's)."""
    context = await browser.new_context(**ctx)
    page = await context.new_page()
    if prepare is not None:
        await prepare(page)
    page.on("console", console.on_console)
    page.on("pageerror", console.on_error)
    origin = daemon.url.rstrip("/")

    async def only_daemon(route: Any) -> None:
        url = route.request.url
        if url.startswith((origin + "/", "data:")):
            await route.continue_()
        else:
            console.errors.append(f"external request: {url}")
            await route.abort()

    await page.route("**/*", only_daemon)
    await page.goto(daemon.url)
    return page


def shot(name: str) -> str:
    """Where a screenshot goes."""
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


async def test_shows_first_price_then_updates_live(
    browser: Browser, daemon: Daemon, fx: FakeExchanges, console: Console
) -> None:
    """The first price appears with Live and Safe to trade; a new tick replaces it in place."""
    page = await open_page(browser, daemon, console, viewport={"width": 1200, "height": 800})
    card = page.locator(f'article.pair[data-pair="{PAIR}"]')
    price = card.locator(".price-value")
    await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "true")
    await expect(page.locator("#trade-label")).to_have_text("Safe to trade")
    await expect(page.locator("#banner")).to_be_hidden()
    await expect(card.locator(".age")).to_have_text(re.compile(r"updated \d+ s ago"))
    rows = page.locator("#sources tbody tr")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(page.locator('#sources tr[data-source="kraken"] .badge')).to_have_text("ok")
    width = (await price.bounding_box() or {})["width"]

    fx.price("kraken", "73400.6")
    fx.price("bitfinex", "73380")
    await expect(price).to_have_text("73,390.30", timeout=WAIT_MS)
    await expect(price).to_have_class(re.compile(r"\bup\b"))
    await expect(card.locator(".change")).to_have_text(
        re.compile(r"^\+25\.00 \(\+0\.03 %\) in \d+ s$")
    )
    line = card.locator("path.line")
    await expect(line).to_have_attribute("d", re.compile(r"^M\S+ L\S+"), timeout=WAIT_MS)
    # Whole dollars still show cents: the same decimals, so the same width (tabular-nums).
    fx.price("kraken", "73400")
    fx.price("bitfinex", "73400")
    await expect(price).to_have_text("73,400.00", timeout=WAIT_MS)
    assert (await price.bounding_box() or {})["width"] == width, "the price keeps its width"
    await expect(card.locator(".y-axis .tick").first).to_have_text(re.compile(r"^73,\d{3}"))
    await expect(card.locator(".x-axis .tick").first).to_have_text(re.compile(r"^\d\d:\d\d"))
    await page.screenshot(path=shot("dashboard-live.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=shot("dashboard-live-phone.png"), full_page=True)
    assert await no_sideways_scroll(page), "no sideways scrolling on a phone"
    assert console.errors == []


async def no_sideways_scroll(page: Page) -> bool:
    """Whether the page (and the sources table) fit the viewport's width."""
    return bool(
        await page.evaluate(
            "document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth"
            " && [...document.querySelectorAll('.table-wrap')]"
            ".every((el) => el.scrollWidth <= el.clientWidth)"
        )
    )


async def test_failing_exchanges_show_stale_banner(
    browser: Browser, daemon: Daemon, fx: FakeExchanges, console: Console
) -> None:
    """Exchanges down: stale banner, canTrade false, errors in the sources table; then back."""
    page = await open_page(browser, daemon, console, viewport={"width": 1200, "height": 800})
    await expect(page.locator("#trade")).to_have_attribute(
        "data-can-trade", "true", timeout=WAIT_MS
    )

    fx.answer("kraken", status=500, body={"error": ["EService:Unavailable"]})
    fx.answer("bitfinex", status=500, body={"error": "maintenance"})
    banner = page.locator("#banner")
    await expect(banner).to_be_visible(timeout=WAIT_MS)
    await expect(banner).to_have_attribute("data-kind", "stale")
    await expect(banner).to_contain_text("Prices are stale")
    await expect(banner).to_contain_text("Trading is paused")
    await expect(page.locator("#connection")).to_have_text("Stale")
    await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "false")
    await expect(page.locator("#trade-label")).to_have_text("Not safe to trade")
    await expect(page.locator(f'article[data-pair="{PAIR}"] .pair-status')).to_have_text("stale")
    error_cell = page.locator('#sources tr[data-source="kraken"] td.error')
    await expect(error_cell).to_contain_text("500", timeout=WAIT_MS)
    await page.screenshot(path=shot("dashboard-stale.png"), full_page=True)

    fx.price("kraken", "73380.6")
    fx.price("bitfinex", "73350")
    # The breakers of both sources rest a few intervals before they probe again.
    await expect(banner).to_be_hidden(timeout=20_000)
    await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "true")
    assert console.errors == []


async def test_lost_daemon_then_recovery_without_reload(
    browser: Browser, daemon: Daemon, fx: FakeExchanges, console: Console
) -> None:
    """Daemon stopped: lost-connection banner; restarted on the same port and DB: live again."""
    page = await open_page(browser, daemon, console, viewport={"width": 1200, "height": 800})
    price = page.locator(f'article[data-pair="{PAIR}"] .price-value')
    await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)
    await page.evaluate("window.__sameDocument = true")

    await daemon.stop()
    banner = page.locator("#banner")
    await expect(banner).to_have_attribute("data-kind", "disconnected", timeout=WAIT_MS)
    await expect(banner).to_contain_text("Connection to the feed lost")
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "false")
    await expect(price).to_have_text("73,365.30")  # the last price stays, dimmed
    card = page.locator(f'article[data-pair="{PAIR}"]')
    await expect(card).to_have_class(re.compile(r"\bdim\b"))
    await expect(card.locator(".pair-status")).to_have_text("offline")
    await expect(page.locator("#trade-reason")).to_contain_text("connection lost")
    await page.screenshot(path=shot("dashboard-disconnected.png"), full_page=True)

    fx.price("kraken", "73500.6")
    fx.price("bitfinex", "73500")
    await daemon.start()
    await expect(price).to_have_text("73,500.30", timeout=20_000)
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(banner).to_be_hidden()
    await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "true")
    assert await page.evaluate("window.__sameDocument") is True, "recovered without a reload"
    assert console.errors == []


async def test_dashboard_files_are_self_contained(daemon: Daemon) -> None:
    """The page sets a same-origin CSP, and feed.js is the JS client byte for byte."""
    import aiohttp  # noqa: PLC0415 - only this test speaks plain HTTP

    async with aiohttp.ClientSession() as session:
        async with session.get(daemon.url) as resp:
            assert resp.status == 200
            assert "connect-src 'self'" in resp.headers["Content-Security-Policy"]
            html = await resp.text()
        assert '"pairs":["BTC-USDT"]' in html
        async with session.get(daemon.url + "dashboard/feed.js") as resp:
            assert resp.content_type == "text/javascript"
            served = await resp.read()
            etag = resp.headers["ETag"]
        async with session.get(
            daemon.url + "dashboard/feed.js", headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status == 304
        async with session.get(daemon.url + "dashboard/..%2fweb.py") as resp:
            assert resp.status == 404
    assert served == CLIENT_SOURCE.read_bytes(), "the page must use clients/js/src/index.js"


BADGES = {
    # source: the badge's text and colour after three cycles
    "kraken": ("ok", "good"),
    "bitfinex": ("failing", "bad"),  # ok, ok, then 500: its circuit is still closed
    "okx": ("resting", "bad"),  # 500 three times: rested
    "binance": ("disabled", "bad"),  # 451: blocked for this location
}


async def test_source_badges_follow_the_last_outcome(
    browser: Browser, daemon_config: Callable[..., Config], fx: FakeExchanges, console: Console
) -> None:
    """A source whose last request failed is "failing", not a green "ok", on any screen."""
    server = Daemon(daemon_config(tuple(BADGES), feed={"interval": 1.0}), fetch=False)
    ok = fx.answers["bitfinex"][0]
    fx.script("bitfinex", ok, ok, Answer(status=500, raw=b"<html>oops</html>"))
    fx.answer("okx", status=500, raw=b"<html>Service Unavailable</html>")
    fx.answer("binance", status=451, body={"code": 0, "msg": "restricted location"})
    await server.start()
    try:
        for _ in range(3):
            await server.app[FETCHER].run_cycle()
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        for source, (text, colour) in BADGES.items():
            badge = page.locator(f'#sources tr[data-source="{source}"] .badge')
            await expect(badge).to_have_text(text, timeout=WAIT_MS)
            await expect(badge).to_have_class(re.compile(rf"\bhealth-{text}\b"))
            await expect(badge).to_have_css("color", await colour_of(page, colour))
        okx_error = page.locator('#sources tr[data-source="okx"] td.error')
        await expect(okx_error).to_contain_text("500")
        await page.screenshot(path=shot("dashboard-sources.png"), full_page=True)

        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(okx_error).to_be_visible()
        # One read in the page: the table is redrawn every second, replacing its cells.
        left, right = await page.evaluate(
            """() => {
                const r = document.querySelector('#sources tr[data-source="okx"] td.error')
                    .getBoundingClientRect()
                return [r.left, r.right]
            }"""
        )
        assert 0 <= left < right <= 390, "the error is within the phone's width"
        assert await no_sideways_scroll(page), "no sideways scrolling on a phone"
        # A full-page shot needs no scrolling (scrolling to a cell raced the redraw).
        await page.screenshot(path=shot("dashboard-sources-phone.png"), full_page=True)
        assert console.errors == []
    finally:
        await server.stop()


async def colour_of(page: Page, kind: str) -> str:
    """The computed colour of the stylesheet's --good or --bad."""
    return str(
        await page.evaluate(
            """kind => {
                const probe = document.createElement('span')
                probe.style.color = `var(--${kind})`
                document.body.append(probe)
                const colour = getComputedStyle(probe).color
                probe.remove()
                return colour
            }""",
            kind,
        )
    )


async def test_chart_has_axes_and_a_gap_across_an_outage(
    browser: Browser, daemon_config: Callable[..., Config], console: Console
) -> None:
    """Prices 1 s apart, a 20 s outage, then more: two line segments, labelled axes."""
    server = Daemon(daemon_config(feed={"interval": 1.0}), fetch=False)
    await server.start()
    try:
        now_ms = round(time.time() * 1000)
        offsets = (-40, -39, -38, -37, -15, -14, -13, -12)
        prices = ("73300", "73310.5", "73305.25", "73320", "73400", "73390.75", "73410", "73405")
        for offset, price in zip(offsets, prices, strict=True):
            draft = TickDraft(PAIR, Decimal(price), now_ms + offset * 1000, ("kraken", "bitfinex"))
            await server.app[STORE].insert(draft)
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        card = page.locator(f'article.pair[data-pair="{PAIR}"]')
        line = card.locator("path.line")
        await expect(line).to_have_attribute("d", re.compile(r"^M.* M"), timeout=WAIT_MS)
        d = await line.get_attribute("d") or ""
        assert d.count("M") == 2, f"one segment before the outage, one after: {d}"
        assert [len(seg.split(" L")) for seg in d.split("M")[1:]] == [4, 4]
        price_ticks = await card.locator(".y-axis .tick").all_text_contents()
        time_ticks = await card.locator(".x-axis .tick").all_text_contents()
        assert len(price_ticks) >= 2 and all(re.match(r"^73,[34]\d\d", t) for t in price_ticks)
        assert len(time_ticks) >= 2 and all(re.match(r"^\d\d:\d\d:\d\d$", t) for t in time_ticks)
        await page.screenshot(path=shot("dashboard-chart-gap.png"), full_page=True)
        assert console.errors == []
    finally:
        await server.stop()


async def test_simulated_prices_are_not_safe_to_trade(
    browser: Browser, daemon_config: Callable[..., Config], console: Console
) -> None:
    """Live, fresh, fake prices: "Not safe to trade", with the reason, and the badge."""
    feed = {"interval": 1.0, "sources": {PAIR: [SIMULATED_SOURCE]}}
    config = daemon_config((SIMULATED_SOURCE,), feed=feed, aggregation={"quorum": 1})
    server = Daemon(config)
    await server.start()
    try:
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        card = page.locator(f'article.pair[data-pair="{PAIR}"]')
        await expect(card.locator(".pair-status")).to_have_text("fresh", timeout=WAIT_MS)
        await expect(page.locator("#connection")).to_have_text("Live")
        await expect(page.locator("#simulated")).to_be_visible()
        trade = page.locator("#trade")
        await expect(trade).to_have_attribute("data-can-trade", "false")
        await expect(page.locator("#trade-label")).to_have_text("Not safe to trade")
        await expect(page.locator("#trade-reason")).to_have_text(
            "Simulated prices: not for trading"
        )
        await page.screenshot(path=shot("dashboard-simulated.png"), full_page=True)
        assert console.errors == []
    finally:
        await server.stop()


# -- with [auth] on: the login form -------------------------------------------------------

EXPECTED_401 = re.compile(r"status of 401 .*/api/(whoami|login|price-stream|sources|prices)")
"""Chromium logs every 401 as a console error; these are the ones the login flow expects
(before a login, and when a session ends: a poll may see it before the stream's reauth)."""


def key_file(path: Path, scope: str = "pairs:* history", expires: float | None = None) -> str:
    """A key file with one new key at ``path``; the key, shown once, is returned."""
    key, record = new_key(KeyStore(), parse_scopes(scope), expires, "dashboard test", time.time())
    write_key_file(path, [record])
    return key


def auth_config(
    daemon_config: Callable[..., Config], tmp_path: Path, alerts: bool = False, **key: Any
) -> tuple[Config, str]:
    """A config with auth on (and alerts if asked) and one key (``key_file`` arguments),
    and that key."""
    secret = key_file(tmp_path / "keys.toml", **key)
    auth = {"enabled": True, "key_file": str(tmp_path / "keys.toml")}
    feed = {"interval": 1.0, "stale_after": 2.0}
    return daemon_config(feed=feed, auth=auth, alerts={"enabled": alerts}), secret


def unexpected(console: Console) -> list[str]:
    """The console errors, less the 401s the login flow causes on purpose."""
    return [e for e in console.errors if not EXPECTED_401.search(e)]


async def test_auth_on_login_form_then_live_prices_then_logout(
    browser: Browser, daemon_config: Callable[..., Config], tmp_path: Path, console: Console
) -> None:
    """Auth on: the form first; a wrong key is refused in words; the right one brings the
    live prices; "Log out" brings the form back."""
    config, key = auth_config(daemon_config, tmp_path)
    server = Daemon(config)
    await server.start()
    try:
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        field = page.get_by_label("API key or token")
        await expect(field).to_be_visible(timeout=WAIT_MS)
        await expect(field).to_be_focused()
        await expect(page.locator("#content")).to_be_hidden()
        await expect(page.locator("#connection")).to_have_text("Logged out")
        await page.screenshot(path=shot("dashboard-login.png"), full_page=True)

        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("alert")).to_have_text("Enter an API key or a token.")
        wrong = key[: key.rindex("_") + 1] + "x" * 43
        await field.fill(wrong)
        await field.press("Enter")
        error = page.locator("#login-error")
        await expect(error).to_contain_text("Login refused", timeout=WAIT_MS)
        await expect(field).to_have_attribute("aria-invalid", "true")

        await field.fill(key)
        await page.get_by_role("button", name="Log in").click()
        price = page.locator(f'article.pair[data-pair="{PAIR}"] .price-value')
        await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)
        await expect(page.locator("#connection")).to_have_text("Live")
        await expect(page.locator("#login")).to_be_hidden()
        await expect(page.locator("#trade")).to_have_attribute("data-can-trade", "true")
        await expect(page.locator('#sources tr[data-source="kraken"] .badge')).to_have_text(
            "ok", timeout=WAIT_MS
        )
        assert await field.input_value() == "", "the key does not stay in the page"
        cookies = await page.context.cookies()
        session = [c for c in cookies if c["name"] == "bt_session"]
        assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        await page.screenshot(path=shot("dashboard-logged-in.png"), full_page=True)

        await page.get_by_role("button", name="Log out").click()
        await expect(field).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator("#login-note")).to_contain_text("Logged out")
        assert not [c for c in await page.context.cookies() if c["name"] == "bt_session"]
        await page.reload()
        await expect(page.get_by_label("API key or token")).to_be_visible(timeout=WAIT_MS)
        assert unexpected(console) == []
    finally:
        await server.stop()


async def test_auth_on_session_end_brings_the_form_back(
    browser: Browser, daemon_config: Callable[..., Config], tmp_path: Path, console: Console
) -> None:
    """A key that expires while the page streams: reauth, whoami says 401, the form is back."""
    config, key = auth_config(daemon_config, tmp_path, expires=time.time() + 4)
    server = Daemon(config)
    await server.start()
    try:
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        field = page.get_by_label("API key or token")
        await field.fill(key)
        await field.press("Enter")
        price = page.locator(f'article.pair[data-pair="{PAIR}"] .price-value')
        await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)
        await expect(field).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator("#login-error")).to_contain_text("Your session has ended")
        await expect(page.locator("#content")).to_be_hidden()
        assert unexpected(console) == []
    finally:
        await server.stop()
