"""``bittrade-feed``: ``serve`` the daemon or ``check-config`` a file.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 78 (EX_CONFIG) for a bad config so
systemd's ``RestartPreventExitStatus=78`` stops a crash loop, 1 for any other fatal error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from bittrade_feed import __version__, logs
from bittrade_feed.config import Config, load_config
from bittrade_feed.errors import ConfigError, FeedError
from bittrade_feed.fetcher import Fetcher
from bittrade_feed.state import FETCHER
from bittrade_feed.web import create_app

EX_CONFIG = 78
log = structlog.get_logger("bittrade_feed")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="bittrade-feed", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bittrade-feed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the daemon")
    serve_cmd.add_argument("--config", type=Path, help="TOML config file (default: built-in)")
    check_cmd = commands.add_parser("check-config", help="validate a config file and exit")
    check_cmd.add_argument("config", type=Path)
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"bittrade-feed: invalid config {args.config}:", file=sys.stderr)
        for key, problem in exc.details:
            print(f"  {key}: {problem}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: configuration valid ({', '.join(config.fetch.pairs)})")
        return 0
    logs.configure(config.log.level, config.log.format)
    try:
        return _run(serve(config, args.config))
    except FeedError as exc:
        log.error("fatal", reason=str(exc))
        return 1
    except OSError as exc:
        log.error("fatal", reason=f"{exc.strerror or exc}")
        return 1


def _run(coro: asyncio.Future[int] | object) -> int:
    try:
        import uvloop  # noqa: PLC0415 - optional: the 'fast' extra
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


async def serve(config: Config, config_path: Path | None) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the config file."""
    if any("simulated" in config.sources_for(p) for p in config.fetch.pairs):
        log.warning("SIMULATED SOURCE ENABLED: prices are fake demo data, not market prices")
    app = create_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.shutdown_timeout,
        # A client that goes away cancels its stream handler at once, freeing it.
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, backlog=4096)
        await site.start()
        log.info(
            "listening",
            url=f"http://{config.server.host}:{config.server.port}/",
            pairs=list(config.fetch.pairs),
            db=str(config.database.path),
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def reload() -> None:
            nonlocal config
            config = reload_config(config, config_path, app[FETCHER])

        loop.add_signal_handler(signal.SIGHUP, reload)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
    log.info("stopped")
    return 0


def reload_config(old: Config, path: Path | None, fetcher: Fetcher) -> Config:
    """Validate and apply a new config; on any fault keep running on the old one."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running config", reason=str(exc))
        return old
    for section in ("server", "database", "stream"):
        if getattr(new, section) != getattr(old, section):
            log.warning("changed setting needs a restart", section=section)
    fetcher.reconfigure(new)
    logs.configure(new.log.level, new.log.format)
    log.info("config reloaded", pairs=list(new.fetch.pairs))
    return new


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
