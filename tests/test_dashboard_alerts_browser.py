"""The dashboard's alerts panel in headless Chromium, against the real daemon (issue 14).

A rule is made through the panel's form; a price from the fake exchanges crosses it; the
daemon's engine fires it and its stream sends the ``alert`` event; the page shows a banner
and a browser notification. The notifications permission is granted to the page's origin
(Playwright's ``grant_permissions``: CDP ``Browser.grantPermissions``), and a script that
runs before the page's own (``add_init_script``: CDP ``Page.addScriptToEvaluateOnNewDocument``)
records each ``new Notification(...)`` and then makes the real one, so the dashboard's own
code path is what runs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Dialog, Page, expect

from bittrade_feed.config import Config
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges
from tests.test_dashboard_browser import (
    EXPECTED_401,
    WAIT_MS,
    Console,
    Daemon,
    auth_config,
    browser,
    console,
    daemon,
    no_sideways_scroll,
    open_page,
    shot,
)

__all__ = ["browser", "console", "daemon"]  # the page's fixtures, shared with its other tests

RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification
  window.__notifications = []
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options)
      window.__notifications.push({ title, body: options.body ?? '', tag: options.tag ?? '' })
    }
  }
  window.Notification = Recorded
})()
"""

EXPECTED_REFUSALS = re.compile(r"status of (404|422) .*/api/alerts/rules")
"""Chromium logs every 4xx answer as a console error; these are the ones a test asks for."""


def unexpected(console: Console) -> list[str]:
    """The console errors, less the refusals the tests cause on purpose (and the 401s of
    the login flow)."""
    expected = (EXPECTED_REFUSALS, EXPECTED_401)
    return [e for e in console.errors if not any(r.search(e) for r in expected)]


@pytest.fixture
async def alerting(daemon_config: Callable[..., Config]) -> AsyncIterator[Daemon]:
    """The daemon with alerts on, fetching every second from the fake exchanges."""
    config = daemon_config(feed={"interval": 1.0, "stale_after": 2.0}, alerts={"enabled": True})
    server = Daemon(config)
    await server.start()
    yield server
    await server.stop()


def notifying(daemon: Daemon) -> Callable[[Page], Any]:
    """Grant notifications to the dashboard's origin and record each one it shows."""

    async def prepare(page: Page) -> None:
        await page.context.grant_permissions(["notifications"], origin=daemon.url.rstrip("/"))
        await page.add_init_script(RECORD_NOTIFICATIONS)

    return prepare


def no_dialogs(page: Page) -> list[str]:
    """Every alert()/confirm() the page opens (errors must show in the page instead)."""
    opened: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        opened.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return opened


async def submit_rule(page: Page, kind: str, fields: dict[str, str]) -> None:
    """Fill the panel's form, each field by its label as shown, and press Create alert."""
    await page.get_by_label("When the price").select_option(kind)
    for label, value in fields.items():
        control = page.get_by_label(label, exact=True)
        if await control.evaluate("el => el.tagName") == "SELECT":
            await control.select_option(value)
        else:
            await control.fill(value)
    await page.get_by_role("button", name="Create alert").click()


async def test_rule_made_in_the_panel_fires_a_banner_and_a_notification(
    browser: Browser, alerting: Daemon, fx: FakeExchanges, console: Console
) -> None:
    """crosses_up 73400 made through the form; the price goes to 73500: the banner with the
    rule's detail, a Notification with it, and the rule shown as fired and done."""
    page = await open_page(
        browser, alerting, console, notifying(alerting), viewport={"width": 1200, "height": 800}
    )
    dialogs = no_dialogs(page)
    price = page.locator(f'article.pair[data-pair="{PAIR}"] .price-value')
    await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)
    assert await page.evaluate("Notification.permission") == "granted"
    await expect(page.locator("#alerts-permission")).to_have_text("Browser notifications are on.")

    form = page.locator("#alert-form")
    await expect(form).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#alert-rules")).to_have_text(f"No alert rules for {PAIR} yet.")
    await expect(page.get_by_label("Percent")).to_be_hidden()  # crosses_up by default
    await submit_rule(page, "crosses_up", {"Level": "73400"})
    rule = page.locator("#alert-rules li.rule")
    await expect(rule).to_have_count(1, timeout=WAIT_MS)
    await expect(rule.locator(".rule-text")).to_have_text("crosses up 73400 · once")
    await expect(rule.locator(".rule-state")).to_have_text("not fired yet")

    # The first price after the rule was made only arms it (it was at or below 73400).
    # The card names the id of the price it shows ("from kraken, bitfinex · id 12"). Two
    # new ones: the first might have been committed before the rule and shown late.
    line = page.locator(f'article.pair[data-pair="{PAIR}"] .sources-line')
    for _ in range(2):
        await expect(line).not_to_have_text(await line.inner_text(), timeout=WAIT_MS)
    fx.price("kraken", "73500")
    fx.price("bitfinex", "73500")
    await expect(price).to_have_text("73,500.00", timeout=WAIT_MS)

    detail = f"{PAIR} 73500 crossed above 73400"
    banner = page.locator("#alert-banners .alert-banner")
    await expect(banner).to_have_count(1, timeout=WAIT_MS)
    await expect(banner).to_have_attribute("role", "alert")
    await expect(banner).to_contain_text(f"Alert: {detail}")
    notes = await page.evaluate("window.__notifications")
    assert notes == [{"title": f"{PAIR} alert", "body": detail, "tag": notes[0]["tag"]}], (
        "one Notification, with the rule's detail"
    )
    assert re.fullmatch(r"bittrade-feed-alert-\d+", notes[0]["tag"])
    await expect(rule.locator(".rule-state")).to_have_text("fired 1 time · done", timeout=WAIT_MS)
    await page.screenshot(path=shot("dashboard-alert-fired.png"), full_page=True)

    await banner.get_by_role("button", name=re.compile("^Dismiss")).click()
    await expect(banner).to_have_count(0)
    await page.wait_for_timeout(1500)  # more prices above the level: a once rule is done
    assert len(await page.evaluate("window.__notifications")) == 1
    await expect(page.locator("#alert-banners .alert-banner")).to_have_count(0)
    assert dialogs == []
    assert unexpected(console) == []


async def test_panel_shows_the_field_of_a_refused_rule_and_deletes_a_rule(
    browser: Browser, alerting: Daemon, console: Console
) -> None:
    """A 422 shows its detail next to the form and marks the named field; Delete removes
    the rule from the panel and from the daemon."""
    page = await open_page(browser, alerting, console, viewport={"width": 1200, "height": 800})
    dialogs = no_dialogs(page)
    await expect(page.locator("#alert-form")).to_be_visible(timeout=WAIT_MS)
    await submit_rule(page, "crosses", {"Level": "100", "Hysteresis": "200"})
    error = page.locator("#alert-error")
    await expect(error).to_have_text("hysteresis must be less than level (100)", timeout=WAIT_MS)
    await expect(error).to_have_attribute("data-field", "hysteresis")
    await expect(error).to_have_attribute("role", "alert")
    hysteresis = page.get_by_label("Hysteresis")
    await expect(hysteresis).to_have_attribute("aria-invalid", "true")
    await expect(hysteresis).to_be_focused()
    await expect(page.get_by_label("Level")).not_to_have_attribute("aria-invalid", "true")
    await page.screenshot(path=shot("dashboard-alert-error.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await no_sideways_scroll(page), "the panel fits a phone"
    await page.screenshot(path=shot("dashboard-alert-error-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1200, "height": 800})

    # Repeating pct_move: the fields its kind takes, and the error gone on success.
    fields = {"Percent": "3", "Within (s)": "600", "Direction": "down"}
    await submit_rule(page, "pct_move", fields | {"Frequency": "repeat", "Cooldown (s)": "120"})
    await expect(page.get_by_label("Level")).to_be_hidden()
    rule = page.locator("#alert-rules li.rule")
    await expect(rule).to_have_text(
        re.compile(r"moves down 3 % within 10 min · repeat, 120 s apart"), timeout=WAIT_MS
    )
    await expect(error).to_be_hidden()
    await expect(hysteresis).not_to_have_attribute("aria-invalid", "true")

    await rule.get_by_role("button", name=re.compile("^Delete alert rule")).click()
    await expect(page.locator("#alert-rules")).to_have_text(
        f"No alert rules for {PAIR} yet.", timeout=WAIT_MS
    )
    listed = await page.evaluate(
        "fetch('api/alerts/rules').then((r) => r.json()).then((d) => d.rules.length)"
    )
    assert listed == 0, "deleted on the daemon, not only in the page"
    assert dialogs == []
    assert unexpected(console) == []


async def test_alerts_off_the_panel_says_so_without_a_form(
    browser: Browser, daemon: Daemon, console: Console
) -> None:
    """alerts.enabled = false: the rules API answers 404 and the panel explains it."""
    page = await open_page(browser, daemon, console, viewport={"width": 1200, "height": 800})
    off = page.locator("#alerts-off")
    await expect(off).to_have_text(
        "Alerts are off on this daemon (alerts.enabled = false in its config).", timeout=WAIT_MS
    )
    await expect(page.locator("#alert-form")).to_be_hidden()
    await expect(page.locator("#alert-rules")).to_be_hidden()
    await expect(page.locator("#alerts-permission")).to_be_hidden()
    await expect(page.locator(f'article.pair[data-pair="{PAIR}"] .price-value')).to_have_text(
        "73,365.30", timeout=WAIT_MS
    )
    assert unexpected(console) == []


async def log_in(page: Page, key: str) -> None:
    """Log in with the dashboard's form; resolves once live prices show."""
    field = page.get_by_label("API key or token")
    await field.fill(key)
    await field.press("Enter")
    price = page.locator(f'article.pair[data-pair="{PAIR}"] .price-value')
    await expect(price).to_have_text("73,365.30", timeout=WAIT_MS)


async def test_auth_on_the_session_makes_rules_and_gets_their_alerts(
    browser: Browser, daemon_config: Callable[..., Config], tmp_path: Path, console: Console
) -> None:
    """Auth on, a key with the alerts scope: the cookie session creates a rule through the
    panel, its test firing arrives on the stream as a banner and a notification; logging
    out clears the banners."""
    config, key = auth_config(daemon_config, tmp_path, alerts=True, scope="pairs:* history alerts")
    server = Daemon(config)
    await server.start()
    try:
        page = await open_page(
            browser, server, console, notifying(server), viewport={"width": 1200, "height": 800}
        )
        await log_in(page, key)
        await expect(page.locator("#alert-form")).to_be_visible(timeout=WAIT_MS)
        fields = {"Level": "1000000", "Frequency": "repeat", "Cooldown (s)": "60"}
        await submit_rule(page, "above", fields)
        rule = page.locator("#alert-rules li.rule")
        await expect(rule.locator(".rule-text")).to_have_text(
            "above 1000000 · repeat, 60 s apart", timeout=WAIT_MS
        )
        rule_id = await rule.get_attribute("data-rule-id")
        status = await page.evaluate(
            "id => fetch(`api/alerts/rules/${id}/test`, {method: 'POST'}).then((r) => r.status)",
            rule_id,
        )
        assert status == 201
        banner = page.locator("#alert-banners .alert-banner")
        await expect(banner).to_have_text(
            re.compile(rf"^Test alert: test firing of alert rule {rule_id}"), timeout=WAIT_MS
        )
        notes = await page.evaluate("window.__notifications")
        assert [n["body"] for n in notes] == [f"test firing of alert rule {rule_id}"]

        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_label("API key or token")).to_be_visible(timeout=WAIT_MS)
        await expect(banner).to_have_count(0)
        assert unexpected(console) == []
    finally:
        await server.stop()


async def test_auth_on_a_key_without_the_alerts_scope_gets_no_form(
    browser: Browser, daemon_config: Callable[..., Config], tmp_path: Path, console: Console
) -> None:
    """Alerts on, but the key lacks the scope: the panel says so (from whoami, without a
    request bound to be refused) and shows no form."""
    config, key = auth_config(daemon_config, tmp_path, alerts=True, scope="pairs:* history")
    server = Daemon(config)
    await server.start()
    try:
        page = await open_page(browser, server, console, viewport={"width": 1200, "height": 800})
        await log_in(page, key)
        await expect(page.locator("#alerts-off")).to_have_text(
            "Alerts need a credential with the alerts scope; this one has none.",
            timeout=WAIT_MS,
        )
        await expect(page.locator("#alert-form")).to_be_hidden()
        assert unexpected(console) == []
        assert not [e for e in console.errors if "alerts" in e], "no refused alerts request"
    finally:
        await server.stop()
