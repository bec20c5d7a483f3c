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
import time
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
# Userinfo (``user:password@`` or a bare token ``user@``) after any scheme, valid URL or not.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/?#@\s]+@")
# Credentials of issue 13, wherever they end up in a message: API keys, JWTs (a base64url
# JSON header always starts "eyJ", as does a session cookie), Bearer values, stream tickets.
_CREDENTIALS = re.compile(
    r"btk_[a-z0-9]+_[A-Za-z0-9_-]+"
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"
    r"|(?<=[Bb]earer )[^\s\"',;]+"
    r"|(?<=ticket=)[^&\s\"',;]+"
    r"|(?<=bt_session=)[^&\s\"',;]+"
)
_CREDENTIAL_MARKS = ("btk_", "eyJ", "earer ", "ticket=", "bt_session=")
_MAX_DEPTH = 32
"""Log values nested deeper than this are not searched (they are never ours)."""


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL, and every credential, replaced by ``***``."""
    if "://" in text:
        text = _URL_CREDENTIALS.sub("***@", text)
    if any(mark in text for mark in _CREDENTIAL_MARKS):
        text = _CREDENTIALS.sub("***", text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it redacted, inside dicts, lists and tuples too."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        # Rendered later by str(); redact what it will say now.
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Redact every field of a log event, at any depth: no URL secret reaches a log."""
    for key, value in event.items():
        if key != "exc_info":
            event[key] = redact_value(value)
    return event


class RateLimitedLog:
    """Lets at most ``per_minute`` lines through per minute and counts the ones it held back."""

    __slots__ = ("clock", "held_back", "left", "per_minute", "window_end")

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.window_end = 0.0
        self.left = 0
        self.held_back = 0

    def allow(self) -> int | None:
        """``None`` to stay quiet, else how many lines were held back since the last one."""
        now = self.clock()
        if now >= self.window_end:
            self.window_end, self.left = now + 60.0, self.per_minute
        if self.left <= 0:
            self.held_back += 1
            return None
        self.left -= 1
        held_back, self.held_back = self.held_back, 0
        return held_back


def stderr_is_journal() -> bool:
    """Whether stderr is the journald stream systemd connected (``$JOURNAL_STREAM``).

    The variable is inherited by children whose stderr is elsewhere (a terminal opened
    from a systemd user session), so the stream's device and inode must match stderr's.
    """
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def journal_prefix(level: str) -> str:
    """The ``<N>`` priority prefix for a line printed straight to a journald stderr."""
    return f"<{_PRIORITY[level]}>" if stderr_is_journal() else ""


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
    ]
    renderer: Processor
    if json_out:
        renderer = structlog.processors.JSONRenderer()
        if stderr_is_journal():
            renderer = _SyslogPrefix(renderer)
        shared.append(structlog.processors.dict_tracebacks)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        shared.append(structlog.processors.format_exc_info)
    # Last, so tracebacks (exception messages included) are redacted too.
    shared.append(redact)
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
