"""``bittrade-feed``: ``serve`` the daemon, ``check-config`` a file, or manage API ``keys``.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 78 (EX_CONFIG) for a bad config so
systemd's ``RestartPreventExitStatus=78`` stops a crash loop, 1 for any other fatal error.

Under systemd, ``serve`` reports through sd_notify: ``READY=1`` once the database is open,
the listeners are bound and the first fetch cycle has run; a ``STATUS=`` line every few
seconds; ``WATCHDOG=1`` only while the fetch loop makes progress, so a wedged loop lets
``WatchdogSec=`` fire; ``RELOADING=1`` ... ``READY=1`` around SIGHUP; ``STOPPING=1`` on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bittrade_feed import __version__
from bittrade_feed.auth import keycli
from bittrade_feed.config import Config, load_config
from bittrade_feed.errors import ConfigError, FeedError
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.ops import logs, systemd
from bittrade_feed.ops.watchdog import Watchdog
from bittrade_feed.server.accesslog import runner_options
from bittrade_feed.server.app import create_app, metrics_handler
from bittrade_feed.server.reload import reload_config
from bittrade_feed.server.state import CLOCK, FETCHER, HUB, METRICS, STORE, SUPERVISOR

EX_CONFIG = 78
LOOP_ENV = "BITTRADE_FEED_LOOP"
"""Environment variable choosing the event loop: ``auto`` (default), ``asyncio`` or ``uvloop``."""
FIRST_CYCLE_MAX_WAIT = 60.0
"""``READY=1`` waits at most this long for the first fetch cycle (``TimeoutStartSec=`` is 90 s)."""

log = structlog.get_logger("bittrade_feed")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    about = __doc__.splitlines()[0].replace("``", "")  # --help is plain text, not reST
    parser = argparse.ArgumentParser(prog="bittrade-feed", description=about)
    parser.add_argument("--version", action="version", version=f"bittrade-feed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the daemon")
    serve_cmd.add_argument("--config", type=Path, help="TOML config file (default: built-in)")
    check_cmd = commands.add_parser("check-config", help="validate a config file and exit")
    check_cmd.add_argument("config", type=Path)
    keycli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "keys":
        return keycli.run(args)
    return _config_command(args)


def _config_command(args: argparse.Namespace) -> int:
    """``serve`` or ``check-config``: both start by reading the config."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _invalid_config(args.config, exc)
    if args.command == "check-config":
        print(f"{args.config}: configuration valid ({', '.join(config.fetch.pairs)})")
        return 0
    logs.configure(config.log.level, config.log.format)
    return _serve_command(config, args.config)


def _serve_command(config: Config, path: Path | None) -> int:
    """Run the daemon; the exit code, whatever ended it."""
    try:
        return _run(serve(config, path))
    except FeedError as exc:
        if isinstance(exc, ConfigError):  # a secret file that went bad since it was read
            return _invalid_config(path, exc)
        return _fatal(str(exc))
    except OSError as exc:
        return _fatal(str(exc.strerror or exc))
    except Exception as exc:  # a bug: log it as one JSON line, not a bare traceback
        log.exception("fatal", reason=f"{type(exc).__name__}: {exc}")
        systemd.notify(f"STATUS=fatal: {_one_line(str(exc))}")
        return 1


def _invalid_config(path: Path | None, exc: ConfigError) -> int:
    # Redacted again here: a message may quote a URL with its user:password@.
    err = logs.journal_prefix("error")  # so `journalctl -p warning` shows why
    print(f"{err}bittrade-feed: invalid config {path}:", file=sys.stderr)
    for key, problem in exc.details:
        print(err + logs.redact_text(f"  {key}: {problem}"), file=sys.stderr)
    systemd.notify(f"STATUS=invalid config: {_one_line(str(exc))}")
    return EX_CONFIG


def _warn_if_open(config: Config) -> None:
    """One warning when the API listens beyond loopback and anyone may read everything."""
    if config.auth.enabled:
        return
    host = config.server.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name: it may well resolve to a public address
    if not loopback:
        log.warning(
            "AUTHENTICATION IS OFF on a non-loopback listener: anyone who reaches "
            f"{host}:{config.server.port} reads every stream and endpoint; "
            "set [auth] enabled = true (README, Authentication)",
        )


def _tune_gc() -> None:
    """Keep collector pauses short while tens of thousands of streams stay open.

    Each subscriber keeps a few dozen long-lived objects. With the default thresholds a
    connect storm of 19,000 subscribers ran 8 full collections over all of them (2.6 s,
    one of 0.67 s: docs/benchmarks.md). Full collections are made rare (every 100th gen1
    run, and CPython still waits for 25 % growth); gen0/gen1 stay small, because a large
    gen1 (tried: 50,000 x 20) lets ~800k survivors pile up and be scanned in one 0.66 s
    pause instead.
    """
    gc.set_threshold(10_000, 10, 100)


def _fatal(reason: str) -> int:
    log.error("fatal", reason=reason)
    systemd.notify(f"STATUS=fatal: {_one_line(reason)}")
    return 1


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed, unless ``$BITTRADE_FEED_LOOP`` says otherwise.

    ``BITTRADE_FEED_LOOP=asyncio`` forces the standard loop (to measure both side by side),
    ``uvloop`` requires uvloop, and ``auto`` (or unset) takes uvloop if it is installed.
    """
    choice = os.environ.get(LOOP_ENV, "auto") or "auto"
    if choice not in ("auto", "asyncio", "uvloop"):
        coro.close()
        raise FeedError(f"{LOOP_ENV}={choice!r}: expected auto, asyncio or uvloop")
    if choice != "asyncio":
        try:
            import uvloop  # noqa: PLC0415 - optional: the 'fast' extra
        except ImportError:
            if choice == "uvloop":
                coro.close()
                raise FeedError(f"{LOOP_ENV}=uvloop but uvloop is not installed") from None
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


async def serve(config: Config, config_path: Path | None) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the config file."""
    if any("simulated" in config.sources_for(p) for p in config.fetch.pairs):
        log.warning("SIMULATED SOURCE ENABLED: prices are fake demo data, not market prices")
    _warn_if_open(config)
    _tune_gc()
    app = create_app(config)
    daemon = _Daemon(app, config, config_path)
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        # Installed first and removed last: a second signal during shutdown is ignored.
        for sig, handler in (
            (signal.SIGTERM, daemon.request_stop),
            (signal.SIGINT, daemon.request_stop),
            (signal.SIGHUP, daemon.reload),
        ):
            loop.add_signal_handler(sig, handler)
            stack.callback(loop.remove_signal_handler, sig)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            # Lines only at info and below, which logs.configure keeps off; never a secret.
            **runner_options(),
            shutdown_timeout=config.server.shutdown_timeout,
            # A client that goes away cancels its stream handler at once, freeing it.
            handler_cancellation=True,
            # The per-connection timer that guards against silent new connections fires
            # once (a stream is a request in progress, so it stays open) and is freed,
            # instead of lingering for aiohttp's default hour on every subscriber.
            keepalive_timeout=75,
        )
        # Cleanup runs even if setup fails half-way: it closes what did start.
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        await _listen(stack, app, runner, config)
        # A fetch loop that dies ends the daemon through the supervisor's on_fatal.
        supervisor = app[SUPERVISOR]
        notifier = supervisor.spawn("sd-notify", daemon.watchdog.run, restart=True)
        stack.push_async_callback(supervisor.cancel, notifier)
        await daemon.wait_first_cycle()
        # Everything built so far lives as long as the process: keep the collector from
        # rescanning it (tens of thousands of objects) in every full collection.
        gc.freeze()
        if not daemon.stopping.is_set():
            daemon.ready()
        await daemon.stopping.wait()
        log.info("shutting down")
    log.info("stopped")
    return daemon.exit_code


async def _listen(
    stack: contextlib.AsyncExitStack, app: web.Application, runner: web.AppRunner, config: Config
) -> None:
    """Bind the API, and /metrics on its own address when configured or socket-activated."""
    inherited = systemd.listen_sockets()
    api = [sock for name, sock in inherited if name != "metrics"]
    metrics = [sock for name, sock in inherited if name == "metrics"]
    backlog = config.server.backlog
    sites: list[web.BaseSite] = [_inherited_site(runner, sock, backlog) for sock in api] or [
        web.TCPSite(
            runner,
            config.server.host,
            config.server.port,
            backlog=backlog,
            reuse_port=config.server.reuse_port or None,
        )
    ]
    if metrics or config.server.metrics_host:
        metrics_runner = web.AppRunner(_metrics_app(app), handle_signals=False, **runner_options())
        # Pushed after the API runner, so it stops first, before the database closes.
        stack.push_async_callback(metrics_runner.cleanup)
        await metrics_runner.setup()
        sites += [_inherited_site(metrics_runner, sock, backlog) for sock in metrics] or [
            web.TCPSite(
                metrics_runner,
                config.server.metrics_host,
                config.server.metrics_port,
                backlog=backlog,
            )
        ]
    for site in sites:
        await site.start()
    log.info(
        "listening",
        urls=[site.name for site in sites],
        socket_activated=bool(inherited),
        pairs=list(config.fetch.pairs),
        db=str(config.database.path),
    )


def _inherited_site(runner: web.AppRunner, sock: socket.socket, fallback: int) -> web.SockSite:
    """A site on a socket-activated socket that keeps the backlog systemd gave it.

    asyncio calls ``listen()`` again on the socket it serves, with the site's backlog
    (aiohttp's default 128), which would shrink the unit's ``Backlog=`` (4096 by default).
    """
    return web.SockSite(runner, sock, backlog=systemd.listen_backlog(sock) or fallback)


def _metrics_app(main_app: web.Application) -> web.Application:
    """A second application that serves only /metrics, from the main one's registry."""
    app = web.Application()
    app[METRICS] = main_app[METRICS]
    app[STORE] = main_app[STORE]
    app.router.add_get("/metrics", metrics_handler)
    return app


class _Daemon:
    """The process's lifecycle: signals, readiness, reloads and a fatal task ending it."""

    def __init__(self, app: web.Application, config: Config, config_path: Path | None) -> None:
        self.app = app
        self.config = config
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.exit_code = 0
        # The fetch loop's progress deadline is on the app's clock: judge it on the same one.
        self.watchdog = Watchdog(
            lambda: self.fetcher.schedule, app[CLOCK].monotonic, self.status_line
        )
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        app[SUPERVISOR].on_fatal = self.fatal

    @property
    def fetcher(self) -> Fetcher:
        return self.app[FETCHER]

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: tell systemd at once, then shut down gracefully."""
        if not self.stopping.is_set():
            systemd.notify("STOPPING=1", "STATUS=stopping")
            self.stopping.set()

    def fatal(self, reason: str) -> None:
        """An essential task died (the supervisor logged it): stop with exit 1."""
        if self.stopping.is_set():
            return
        self.exit_code = 1
        systemd.notify(f"STATUS=fatal: {_one_line(reason)}")
        self.request_stop()

    async def wait_first_cycle(self) -> None:
        """Wait until the fetch loop has finished one cycle, or as long as one can take."""
        fetch = self.config.fetch
        # Retries stop at max_attempts or at the interval's budget, whichever comes first.
        longest = min(fetch.interval, fetch.max_attempts * (fetch.request_timeout + 2.0))
        bound = min(longest + fetch.request_timeout, FIRST_CYCLE_MAX_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while self.fetcher.cycles < 1 and not self.stopping.is_set():
            if loop.time() >= deadline:
                log.warning("ready before the first fetch cycle finished", waited_s=bound)
                return
            await asyncio.sleep(0.02)

    def ready(self) -> None:
        """The listeners answer and the first fetch has been attempted."""
        self.watchdog.is_ready = True
        systemd.notify("READY=1", f"STATUS={self.status_line()}")

    def reload(self) -> None:
        """SIGHUP: RELOADING=1 at once, then validate and apply the file in a task."""
        if self.stopping.is_set():
            return
        if FETCHER not in self.app:
            log.warning("SIGHUP ignored: still starting, the config is being read already")
            return
        if self.watchdog.is_ready:
            systemd.notify_reloading("STATUS=reloading")
        task = asyncio.create_task(self._reload(), name="reload")
        self._reloads.add(task)  # a reference, so the task is not collected half-way
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        async with self._reload_lock:  # a second SIGHUP waits for the first to finish
            try:
                self.config, error = await reload_config(self.app, self.config_path)
            except Exception as exc:  # a bug: the running config stays, the daemon serves on
                log.exception("reload failed, keeping the running config", reason=str(exc))
                error = f"{type(exc).__name__}: {exc}"
            status = f"reload failed: {_one_line(error)}" if error else self.status_line()
            if self.watchdog.is_ready and not self.stopping.is_set():
                systemd.notify("READY=1", f"STATUS={status}")

    def status_line(self) -> str:
        """One line for ``systemctl status``: each pair's price and age, and subscribers."""
        hub, fetcher = self.app[HUB], self.fetcher
        parts: list[str] = []
        for pair in fetcher.config.fetch.pairs:
            tick = hub.latest.get(pair)
            age = fetcher.age(pair)
            if tick is None or age is None:
                parts.append(f"{pair} no price yet")
                continue
            stale = ", stale" if fetcher.pairs[pair].status.state == "stale" else ""
            parts.append(f"{pair} {tick.price} ({age:.0f} s old{stale})")
        n = hub.count
        parts.append(f"{n} subscriber{'' if n == 1 else 's'}")
        stalled = self.watchdog.stalled_for()
        if stalled is not None:
            parts.insert(0, f"fetch loop stalled for {stalled:.0f} s")
        return "; ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
