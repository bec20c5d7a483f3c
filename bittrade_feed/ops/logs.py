"""structlog set-up: one JSON object per line for journald, readable lines on a terminal.

Library loggers (aiohttp, asyncio) go through the same renderer via the stdlib bridge,
so the journal holds one format. Under systemd (``$JOURNAL_STREAM``) each line starts
with a ``<N>`` syslog priority, so ``journalctl -p warning`` filters by level.
"""

from __future__ import annotations

import logging
import os
import re
import sys

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Remove ``user:password@`` from any URL in any string value: no secret reaches a log."""
    for key, value in event.items():
        if isinstance(value, str) and "://" in value:
            event[key] = _URL_CREDENTIALS.sub("***@", value)
    return event


class _SyslogPrefix:
    """Prefix each rendered line with ``<N>`` so journald records its priority."""

    def __init__(self, renderer: Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        level = str(event.get("level", "info"))
        rendered = self.renderer(logger, name, event)
        text = rendered.decode() if isinstance(rendered, bytes) else str(rendered)
        return f"<{_PRIORITY.get(level, 6)}>{text}"


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger; safe to call again on reload."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Processor
    if json_out:
        renderer = structlog.processors.JSONRenderer()
        if os.environ.get("JOURNAL_STREAM"):
            renderer = _SyslogPrefix(renderer)
        shared.append(structlog.processors.dict_tracebacks)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiohttp's access log is one line per request: noise at info for a streaming server.
    logging.getLogger("aiohttp.access").setLevel(max(numeric, logging.WARNING))
