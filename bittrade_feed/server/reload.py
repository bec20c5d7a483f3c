"""SIGHUP: validate the config file again and apply what can change without a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import structlog
from aiohttp import web

from bittrade_feed.config import Config, load_config
from bittrade_feed.errors import ConfigError, StoreError
from bittrade_feed.models import Tick
from bittrade_feed.ops import logs
from bittrade_feed.server.pairs import apply_pair_changes
from bittrade_feed.server.state import AUTH, FETCHER, HUB, STORE, TLS, current_config
from bittrade_feed.server.tls import reload_context

RESTART_SECTIONS = ("server", "database", "stream", "cluster", "auth", "alerts")
"""Config sections a reload cannot apply: the listeners, the open database, the hub, Redis,
the issuers and session secret (the key file's rows do reload: ``reload_keys``), and the
alert engine, outbox worker and routes, which are built (or not) at start."""

log = structlog.get_logger("bittrade_feed.server.reload")


async def reload_config(app: web.Application, path: Path | None) -> tuple[Config, str | None]:
    """Validate and apply a new config; on any fault keep the old one and say why.

    Reloads must not overlap (the caller serialises them): the only await, reading the
    stored prices of new pairs, comes before anything is changed.
    """
    old = current_config(app)
    # First, and whatever the config file says: a revocation must not wait for a typo fix.
    key_error = reload_keys(app)
    tls_error = reload_tls(app, old)
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running config", reason=str(exc))
        return old, str(exc)
    needs_restart = [
        f"{section}.{f.name}"
        for section in RESTART_SECTIONS
        for f in dataclasses.fields(getattr(old, section))
        if getattr(getattr(old, section), f.name) != getattr(getattr(new, section), f.name)
    ]
    if needs_restart:
        log.warning("changed settings need a restart; the running values stay", keys=needs_restart)
    # The config in force: the new reloadable parts, the running restart-only sections.
    new = dataclasses.replace(new, **{s: getattr(old, s) for s in RESTART_SECTIONS})
    added = [p for p in new.fetch.pairs if p not in old.fetch.pairs]
    stored: dict[str, Tick] = {}
    if added:
        try:
            stored = await app[STORE].latest(added)
        except StoreError as exc:  # the pair still starts, as "no price yet"
            log.warning("stored prices of new pairs unavailable", pairs=added, reason=str(exc))
    fetcher = app[FETCHER]
    try:
        fetcher.reconfigure(new, stored)
    except Exception as exc:  # a bug: keep serving on the old config rather than die
        log.exception("reload failed, keeping the running config", reason=str(exc))
        fetcher.reconfigure(old)
        return old, f"{type(exc).__name__}: {exc}"
    apply_pair_changes(app, old.fetch.pairs, stored)
    logs.configure(new.log.level, new.log.format)
    log.info("config reloaded", pairs=list(new.fetch.pairs))
    return new, key_error or tls_error


def reload_keys(app: web.Application) -> str | None:
    """Re-read the key file and close, with ``reauth``, the streams of keys now invalid."""
    auth = app.get(AUTH)
    if auth is None:
        return None
    error = auth.reload_keys()
    closed = app[HUB].revoke()
    if closed:
        log.info("streams of revoked or expired keys closed", streams=closed)
    return error


def reload_tls(app: web.Application, running: Config) -> str | None:
    """Read the certificate and key again (same paths: renewed files); on a fault keep
    serving the old pair and say why."""
    context = app.get(TLS)
    if context is None:
        return None
    try:
        reload_context(context, running.server)
    except ConfigError as exc:
        log.error("TLS certificate reload failed, keeping the running one", reason=str(exc))
        return str(exc)
    log.info("TLS certificate reloaded", cert=str(running.server.tls_cert))
    return None
