"""``bittrade-feed keys add|list|revoke --key-file PATH``: manage the API key file.

``add`` prints the new key once, on stdout (notes go to stderr, so
``KEY=$(bittrade-feed keys add ...)`` captures just the key); the file keeps only its hash.
Every change rewrites the file atomically with mode 0600, under a lock so two commands
at once cannot lose a row. The daemon applies changes on its next SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bittrade_feed.auth.keys import KeyStore, load_key_file, new_key, revoked, write_key_file
from bittrade_feed.auth.scopes import Scopes, check_pattern
from bittrade_feed.errors import ConfigError
from bittrade_feed.models import format_ts, parse_ts

EX_CONFIG = 78
_DURATION = re.compile(r"([0-9]{1,6})([dhm])")
_UNIT = {"d": 86400, "h": 3600, "m": 60}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``keys`` command and its three subcommands."""
    keys = commands.add_parser("keys", help="add, list or revoke API keys in a key file")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    add = sub.add_parser("add", help="create a key and print it once")
    add.add_argument(
        "--pairs",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="pairs it may stream: BTC-USD, BTC-*, *-USD or *",
    )
    add.add_argument("--history", action="store_true", help="may read /api/prices")
    add.add_argument("--alerts", action="store_true", help="may manage alerts")
    add.add_argument("--expires", help="RFC 3339 time, or a duration like 90d, 12h, 30m")
    add.add_argument("--note", default="", help="who or what the key is for")
    listing = sub.add_parser("list", help="show every key (never a secret)")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for parser in (add, listing, revoke):
        parser.add_argument("--key-file", type=Path, required=True, help="the key file")


def run(args: argparse.Namespace) -> int:
    """Carry out one ``keys`` subcommand; the exit code."""
    path: Path = args.key_file
    try:
        with _locked(path):
            return _COMMANDS[args.keys_command](args, path)
    except ConfigError as exc:
        print(f"bittrade-feed: invalid key file {path}:", file=sys.stderr)
        for where, problem in exc.details:
            print(f"  {where}: {problem}", file=sys.stderr)
        return EX_CONFIG
    except (OSError, ValueError) as exc:
        print(f"bittrade-feed keys: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _load(path: Path, *, create: bool = False) -> KeyStore:
    if create and not path.exists():
        return KeyStore()
    return load_key_file(path)


def _add(args: argparse.Namespace, path: Path) -> int:
    store = _load(path, create=True)
    pairs: list[str] = []
    for raw in args.pairs:
        pattern = check_pattern(raw)
        if pattern not in pairs:
            pairs.append(pattern)
    if any(not c.isprintable() for c in args.note):
        raise ValueError("--note must be printable text")
    now = time.time()
    expires = parse_expiry(args.expires, now) if args.expires else None
    key, record = new_key(
        store, Scopes(tuple(pairs), args.history, args.alerts), expires, args.note, now
    )
    write_key_file(path, [*store.records.values(), record])
    print(key)
    print(
        f"added key {record.id} ({record.scopes.words() or 'no scopes'}) to {path}; "
        "the key is shown only this once. Reload the daemon (SIGHUP) to use it.",
        file=sys.stderr,
    )
    if not pairs:
        print("note: no --pairs given, so this key can open no stream", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, path: Path) -> int:
    store = _load(path)
    now = time.time()
    print(f"{'id':<14} {'state':<8} {'expires':<25} scope / note")
    for r in store.records.values():
        expires = format_ts(round(r.expires * 1000)) if r.expires is not None else "never"
        note = f"  # {r.note}" if r.note else ""
        print(f"{r.id:<14} {r.state(now):<8} {expires:<25} {r.scopes.words() or '-'}{note}")
    return 0


def _revoke(args: argparse.Namespace, path: Path) -> int:
    store = _load(path)
    record = store.records.get(args.key_id)
    if record is None:
        print(f"bittrade-feed keys: no key {args.key_id!r} in {path}", file=sys.stderr)
        return 1
    store.records[record.id] = revoked(record)
    write_key_file(path, list(store.records.values()))
    print(
        f"revoked key {record.id}; reload the daemon (SIGHUP) to close its streams", file=sys.stderr
    )
    return 0


_COMMANDS = {"add": _add, "list": _list, "revoke": _revoke}


def parse_expiry(text: str, now: float) -> float:
    """``--expires``: an RFC 3339 time or ``<n>d``/``<n>h``/``<n>m`` from now."""
    match = _DURATION.fullmatch(text.strip())
    if match is not None:
        return now + int(match.group(1)) * _UNIT[match.group(2)]
    try:
        when = parse_ts(text) / 1000
    except (ValueError, OverflowError):
        raise ValueError(
            f"--expires {text!r}: give an RFC 3339 time (2027-01-01T00:00:00Z) or 90d, 12h, 30m"
        ) from None
    if when <= now:
        raise ValueError(f"--expires {text!r} is in the past")
    return when
