"""The live dashboard at ``/``: static files shipped in the package, no external requests.

The page uses the very JS client integrators use, from one source of truth:
``clients/js/src/index.js``. The wheel build copies it in as ``static/feed.js`` (see
``force-include`` in pyproject.toml); a checkout or editable install reads it in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from bittrade_feed import __version__
from bittrade_feed.server.state import CONFIG, current_config

ASSET_TYPES = {
    "dashboard.js": "text/javascript",
    "alerts.js": "text/javascript",
    "problem.js": "text/javascript",
    "feed.js": "text/javascript",
    "dashboard.css": "text/css",
}
"""The only files served under ``/dashboard/``, with their media types."""

CONFIG_PLACEHOLDER = "__FEED_CONFIG__"

# Everything the page loads comes from this origin; the stream and REST calls too.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file, read once."""

    body: bytes
    content_type: str
    etag: str


def add_dashboard_routes(app: web.Application) -> None:
    """Serve the dashboard page at ``/`` and its files under ``/dashboard/``."""
    app.router.add_get("/", dashboard_page)
    app.router.add_get("/dashboard/{name}", dashboard_asset)


JS_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "js" / "src" / "index.js"
"""The JS client in a checkout; installed wheels carry it as ``static/feed.js``."""


def _read(name: str) -> bytes:
    packaged = resources.files("bittrade_feed.server").joinpath("static", name)
    if name == "feed.js" and not packaged.is_file():
        return JS_CLIENT.read_bytes()
    return packaged.read_bytes()


@cache
def _template() -> str:
    return _read("index.html").decode()


@cache
def _asset(name: str) -> Asset:
    body = _read(name)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, ASSET_TYPES[name], etag)


def page_config(app: web.Application) -> dict[str, Any]:
    """What the page needs to know about the feed (the config in force, after reloads)."""
    config = current_config(app)
    return {
        "pairs": list(config.fetch.pairs),
        "interval": config.fetch.interval,
        "stale_after": config.fetch.stale_after,
        "heartbeat": config.stream.heartbeat,
        "simulated": any("simulated" in config.sources_for(p) for p in config.fetch.pairs),
        "version": __version__,
        # The page asks /api/whoami and may show its login form only when auth is on.
        "auth": config.auth.enabled,
        # The alerts panel asks the rules API only when it is mounted, which is decided at
        # start (a reload does not mount or unmount it): no 404 in every browser console.
        "alerts": app[CONFIG].alerts.enabled,
    }


async def dashboard_page(request: web.Request) -> web.Response:
    """The dashboard HTML, with the feed's settings embedded as JSON."""
    # "<" escaped so no value can close the <script> element the JSON sits in.
    data = json.dumps(page_config(request.app), separators=(",", ":")).replace("<", "\\u003c")
    html = _template().replace(CONFIG_PLACEHOLDER, data, 1)
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


async def dashboard_asset(request: web.Request) -> web.Response:
    """One of the page's static files; anything else is 404 (no directory is exposed)."""
    name = request.match_info["name"]
    if name not in ASSET_TYPES:
        raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
    asset = _asset(name)
    headers = {
        "ETag": asset.etag,
        # Revalidate every load: a daemon upgrade must not leave a stale client in caches.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )
