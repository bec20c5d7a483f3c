"""The TOML reader and value checks that ``config`` builds on.

``Reader`` takes keys out of a decoded document and records every fault with its full
key path, so one pass reports every mistake in a file; the check functions turn a raw
TOML value into a typed one or raise ``Bad`` with a message that says what to write.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bittrade_feed.errors import ConfigError
from bittrade_feed.models import split_pair
from bittrade_feed.ops.logs import redact_text

T = TypeVar("T")

SHOWN_BITS = 64
LOG10_2 = math.log10(2)


class Reader:
    """Takes keys out of the document, noting every fault once with its full key path."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.errors: list[tuple[str, str]] = []
        self._seen: set[str] = set()
        """Keys the schema has: read, whether or not the file sets them."""
        self._reported: set[str] = set()
        self._sections: set[str] = set()
        """Tables the schema has, whether or not the file sets them."""
        self._not_tables: set[str] = set()

    def finish(self) -> None:
        """Report the keys nobody read, then raise every fault at once."""
        self._report_unknown(self.raw, "")
        if self.errors:
            raise ConfigError(self.errors)

    def _report_unknown(self, node: dict[str, Any], prefix: str) -> None:
        for name, value in node.items():
            key = prefix + name
            if key in self._seen or key in self._reported:
                continue
            if isinstance(value, dict) and key in self._sections:
                self._report_unknown(value, key + ".")
                continue
            known = sorted(
                {
                    s[len(prefix) :].split(".")[0]
                    for s in self._seen | self._sections
                    if s.startswith(prefix) and "[" not in s
                }
            )
            close = difflib.get_close_matches(name, known, n=1)
            if close:
                hint = f" (did you mean {prefix}{close[0]}?)"
            elif known:
                hint = f" (expected one of: {', '.join(known)})"
            else:
                hint = ""
            self.fail(key, f"unknown key{hint}")

    def fail(self, key: str, problem: str) -> None:
        """Record one fault; the key is never reported again as unknown."""
        self.errors.append((printable(key), printable(problem)))
        self._reported.add(key)

    def faulted(self, key: str) -> bool:
        """Whether a fault was recorded at ``key`` or inside it."""
        return any(k == key or k.startswith((key + ".", key + "[")) for k, _ in self.errors)

    def has(self, key: str) -> bool:
        """Whether the file sets ``key`` (inside tables that are tables)."""
        table, _, name = key.rpartition(".")
        return name in (self.table(table) if table else self.raw)

    def table(self, key: str) -> dict[str, Any]:
        """The table at ``key`` (empty if absent); a non-table is reported once, at its key."""
        node: Any = self.raw
        path = ""
        for part in key.split("."):
            path = f"{path}.{part}" if path else part
            self._sections.add(path)
            node = node.get(part, {})
            if not isinstance(node, dict):
                if path not in self._not_tables:
                    self._not_tables.add(path)
                    self.fail(path, f"must be a table, not {kind(node)}")
                return {}
        table: dict[str, Any] = node
        return table

    def get(self, key: str, default: T, check: Callable[[Any], T]) -> T:
        """The checked value of ``key``, or ``default`` if it is absent or bad."""
        table, _, name = key.rpartition(".")
        node = self.table(table) if table else self.raw
        self._seen.add(key)
        if name not in node:
            return default
        try:
            return check(node[name])
        except Bad as bad:
            self.fail(key, str(bad))
            return default

    def items(self, key: str, check: Callable[[Any], T]) -> list[T] | None:
        """The list at ``key``, each item checked and faulted as ``key[i]``; ``None`` if absent."""
        if not self.has(key):
            self._seen.add(key)
            return None
        raw: list[Any] = self.get(key, [], list_of)
        good: list[T] = []
        for i, item in enumerate(raw):
            try:
                good.append(check(item))
            except Bad as bad:
                self.fail(f"{key}[{i}]", str(bad))
        return good


def printable(text: str) -> str:
    """``text`` with control and line-separator characters escaped: one fault, one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Bad(ValueError):
    """A value that does not fit its key; the message says what to write instead."""


def kind(value: Any) -> str:
    """The TOML name of a value's type, for messages."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), "a date/time")


def number(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Callable[[Any], float]:
    """A check for a finite number in range (integers accepted, booleans not)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Bad(f"must be a number, not {kind(value)}")
        # Compared before float(): an integer of 400 digits does not fit a float at all,
        # and one past 1.8e308 would raise OverflowError even where no upper bound is set.
        finite = (
            abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)
        )
        if not finite or value < lo or (lo_open and value == lo) or value > hi:
            low = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
            high = "" if hi == math.inf else f" and at most {hi:g}"
            raise Bad(f"{shown_number(value)} is out of range: must be {low}{high}")
        return float(value)

    return check


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    """A check for a whole number from ``lo`` to ``hi``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (write it without a decimal point)" if isinstance(value, float) else ""
            raise Bad(f"must be an integer, not {kind(value)}{hint}")
        if not lo <= value <= hi:
            raise Bad(f"{shown_number(value)} is out of range: must be from {lo} to {hi}")
        return value

    return check


def shown_number(value: float) -> str:
    """A number as quoted in a message; a huge integer by its length, not its digits."""
    if isinstance(value, int) and abs(value).bit_length() > SHOWN_BITS:
        # str() of an integer over 4,300 digits raises, and nobody reads 400 digits.
        digits = math.floor(abs(value).bit_length() * LOG10_2) + 1
        return f"a number of about {digits} digits"
    return repr(value)


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    """A check for one of a fixed set of words."""

    def check(value: Any) -> str:
        text = string(value)
        if text not in options:
            raise Bad(f"{text!r} is not one of {', '.join(options)}")
        return text

    return check


def string(value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise Bad(f"must be a string, not {kind(value)}")
    return value


def list_of(value: Any) -> list[Any]:
    """A list (its items are checked one by one by the caller)."""
    if not isinstance(value, list):
        hint = f" (write [{json.dumps(value)}])" if isinstance(value, str) else ""
        raise Bad(f"must be a list, not {kind(value)}{hint}")
    return value


def host(value: Any, *, optional: bool = False) -> str:
    """A listen address: a host name or IP, without scheme, port or brackets."""
    text = string(value)
    if optional and not text:
        return text
    if not text.strip():
        raise Bad("must not be empty (for example 127.0.0.1, or 0.0.0.0 for every interface)")
    if "/" in text or any(c.isspace() for c in text):
        raise Bad(f"{text!r} is not a host name or address (no scheme, path or spaces)")
    if text.startswith("["):
        raise Bad(f"{text!r}: write an IPv6 address without brackets, like ::1")
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise Bad(f"{text!r} looks like host:port; put the port in its own key") from None
    return text


def url(value: Any) -> str:
    """An ``http://`` or ``https://`` base URL with a host (and a valid port, if any)."""
    text = string(value)
    shown = repr(redact_text(text))
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as exc:
        raise Bad(f"{shown} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Bad(f"{shown} is not an http:// or https:// URL with a host")
    return text


def file_path(value: Any) -> Path | None:
    """A file path, ``~`` expanded; "" (the example file's way of saying none) is ``None``."""
    text = string(value)
    if not text:
        return None
    if not text.strip() or "\0" in text:
        raise Bad("must be a file path")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise Bad(f"{text!r}: no home directory to expand ~ to; write the full path") from None


def pair_name(value: Any) -> str:
    """An upper-case ``BASE-QUOTE`` pair."""
    text = string(value)
    try:
        split_pair(text)
    except ValueError as exc:
        if text != text.upper() and valid_pair(text.upper()):
            raise Bad(f"{text!r} must be upper case: {text.upper()}") from None
        raise Bad(str(exc)) from None
    return text


def valid_pair(text: str) -> bool:
    """Whether ``text`` is a well-formed pair."""
    try:
        split_pair(text)
    except ValueError:
        return False
    return True


# --- [cluster] and server.reuse_port checks (issue 12) ------------------------------------
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NODE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def boolean(value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, not {kind(value)}")
    return value


def redis_url(value: Any) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL (or "" for none)."""
    text = string(value)
    if not text:
        return text
    parts = urlsplit(text)
    if parts.scheme not in _REDIS_SCHEMES:
        raise Bad(f"{text!r} is not a redis://, rediss:// or unix:// URL")
    if parts.scheme == "unix" and not parts.path:
        raise Bad(f"{text!r} names no socket path (write unix:///run/redis/redis.sock)")
    if parts.scheme != "unix" and not parts.hostname:
        raise Bad(f"{text!r} names no host (write redis://127.0.0.1:6379/0)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise Bad(f"{text!r} has a port that is not a number from 1 to 65535") from None
    return text


def host_port(value: Any) -> str:
    """A ``host:port`` address (IPv6 as ``[::1]:26379``)."""
    text = string(value)
    name, sep, port = text.rpartition(":")
    if not sep or not name or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Bad(f"{text!r} is not host:port (for example 127.0.0.1:26379)")
    host(name.removeprefix("[").removesuffix("]"))
    return text


def key_prefix(value: Any) -> str:
    """A Redis key prefix: letters, digits, ``_ . -``, at most 64."""
    text = string(value)
    if not _KEY_PREFIX.match(text):
        raise Bad(f"{text!r} must be 1 to 64 letters, digits, '_', '.' or '-'")
    return text


def node_name(value: Any) -> str:
    """A node name: letters, digits, ``_ . -`` (empty: host name and pid)."""
    text = string(value)
    if text and not _NODE_NAME.match(text):
        raise Bad(f"{text!r} must be letters, digits, '_', '.' or '-' (at most 100)")
    return text


# --- end [cluster] checks ------------------------------------------------------------------


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def network(value: Any) -> IPNetwork:
    """An IP address or CIDR block (``10.0.0.0/8``, ``::1``); a bare address is a /32 or /128."""
    text = string(value).strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Bad(f"{text!r} is not an IP address or CIDR block (like 10.0.0.0/8)") from None


def origin(value: Any) -> str:
    """A browser origin: ``scheme://host[:port]``, no path, lower case, never ``*``."""
    text = string(value).strip()
    if text in ("*", "null"):
        raise Bad(
            f"{text!r} would let any site read streams with its visitors' cookies; "
            "list each origin, like https://app.example.com"
        )
    try:
        url(text)
    except Bad:
        raise Bad(f"{text!r} is not an origin like https://app.example.com") from None
    parts = urlsplit(text)
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise Bad(f"{text!r}: an origin has no path, query or user (like https://app.example.com)")
    # Browsers send the scheme and host in lower case; a default port is never sent.
    return text.lower()
