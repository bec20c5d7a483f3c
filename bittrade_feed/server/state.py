"""The typed keys under which the application keeps its state (no module globals)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from bittrade_feed.auth.authenticator import Authenticator
from bittrade_feed.broadcast.hub import Hub
from bittrade_feed.clock import Clock
from bittrade_feed.config import Config
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.feed.ticklog import TickLog
from bittrade_feed.ops.metrics import Metrics
from bittrade_feed.ops.supervise import Supervisor
from bittrade_feed.store.sqlite import Store

CONFIG = web.AppKey("config", Config)
"""The start-up config; settings that may change on reload are read from ``FETCHER``."""
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
SESSION = web.AppKey("session", aiohttp.ClientSession)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
TICKLOG = web.AppKey("ticklog", TickLog)
"""The one writer of prices: the fetcher's sink; the hub listens to it."""
FETCHER = web.AppKey("fetcher", Fetcher)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
"""Runs every background task; ``failed`` says why the daemon cannot go on."""
AUTH = web.AppKey("auth", Authenticator)
"""Present only when ``auth.enabled``: the middleware then asks it about every request."""
FETCH_TASK = web.AppKey("fetch_task", asyncio.Task[None])
"""The running fetch loop (absent when the app was built with ``fetch=False``)."""


def current_config(app: web.Application) -> Config:
    """The config in force: the fetcher holds it, because SIGHUP may have replaced it."""
    return app[FETCHER].config
