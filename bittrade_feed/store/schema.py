"""The database schema, its migrations, the row <-> ``Tick`` mapping, and the statements."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiosqlite

from bittrade_feed.errors import StoreError
from bittrade_feed.models import Tick, TickDraft


# One entry per schema version; PRAGMA user_version says how many have been applied.
# Never edit a released entry: append a new one.
@dataclass(frozen=True, slots=True)
class AddColumn:
    """A migration step adding a column unless the table has it: SQLite's ``ADD COLUMN``
    has no ``IF NOT EXISTS``, and every step must be safe to run again (see below)."""

    table: str
    column: str
    declaration: str


MIGRATIONS: tuple[str | AddColumn, ...] = (
    """
    CREATE TABLE ticks (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        pair    TEXT    NOT NULL,
        price   TEXT    NOT NULL,
        ts_ms   INTEGER NOT NULL,
        sources TEXT    NOT NULL
    );
    CREATE INDEX ticks_pair_id ON ticks (pair, id);
    CREATE INDEX ticks_pair_ts ON ticks (pair, ts_ms);
    """,
    # history_floor: the highest id deleted or known missing. A database that retention
    # has already thinned gets the highest id missing below (or above) a kept row.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) SELECT 'history_floor', MAX(
        COALESCE((SELECT MAX(t.id - 1) FROM ticks t WHERE t.id > 1
                  AND NOT EXISTS (SELECT 1 FROM ticks u WHERE u.id = t.id - 1)), 0),
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'ticks'
                  AND seq NOT IN (SELECT id FROM ticks)), 0)
    );
    """,
    # Price alerts (issue 14). A firing is unique per (rule, tick), so evaluating a tick
    # twice cannot record it twice; an outbox row's id is its idempotency id (the same
    # on every delivery attempt). Rows go with their rule: the alerts store deletes them
    # explicitly (foreign keys are not enforced by this connection). IF NOT EXISTS: a
    # database whose user_version was set back by hand can run this step again.
    """
    CREATE TABLE IF NOT EXISTS alert_rules (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        owner        TEXT    NOT NULL,
        pair         TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        params       TEXT    NOT NULL,
        frequency    TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        last_tick_id INTEGER NOT NULL,
        version      INTEGER NOT NULL,
        created_ms   INTEGER NOT NULL,
        expires_ms   INTEGER
    );
    CREATE INDEX IF NOT EXISTS alert_rules_owner ON alert_rules (owner, id);
    CREATE TABLE IF NOT EXISTS alert_firings (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id INTEGER NOT NULL REFERENCES alert_rules (id),
        tick_id INTEGER,
        at_ms   INTEGER NOT NULL,
        payload TEXT    NOT NULL,
        UNIQUE (rule_id, tick_id)
    );
    CREATE TABLE IF NOT EXISTS alert_outbox (
        id          TEXT    PRIMARY KEY,
        firing_id   INTEGER NOT NULL REFERENCES alert_firings (id),
        channel     TEXT    NOT NULL CHECK (channel IN ('stream', 'webhook')),
        endpoint_id TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at_ms  INTEGER NOT NULL,
        state       TEXT    NOT NULL DEFAULT 'pending',
        last_error  TEXT
    );
    CREATE INDEX IF NOT EXISTS alert_outbox_due ON alert_outbox (state, next_at_ms);
    """,
    # Webhook endpoints of alert owners (issue 14). A rotation keeps the old secret in
    # old_secret until old_until_ms, so both sign while receivers switch over; a 410
    # from the receiver sets disabled_ms.
    """
    CREATE TABLE IF NOT EXISTS alert_endpoints (
        id           TEXT    PRIMARY KEY,
        owner        TEXT    NOT NULL,
        url          TEXT    NOT NULL,
        secret       TEXT    NOT NULL,
        old_secret   TEXT,
        old_until_ms INTEGER,
        disabled_ms  INTEGER,
        created_ms   INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS alert_endpoints_owner ON alert_endpoints (owner, created_ms);
    """,
    # Streams resume their alert events from alert_firings by id, so the outbox keeps
    # only webhook deliveries; stream rows written before this step are dropped.
    """
    DELETE FROM alert_outbox WHERE channel = 'stream';
    """,
    # A webhook endpoint's body format: Standard Webhooks' (every endpoint made before)
    # or Alertmanager's webhook JSON.
    AddColumn("alert_endpoints", "format", "TEXT NOT NULL DEFAULT 'standard'"),
)

COLUMNS = "id, pair, price, ts_ms, sources"


def to_row(tick: Tick) -> tuple[int, str, str, int, str]:
    """The stored form of a tick (price as its exact decimal text)."""
    return (tick.id, tick.pair, str(tick.price), tick.ts_ms, ",".join(tick.sources))


def to_tick(row: Sequence[object]) -> Tick:
    """A ``Tick`` from a row selected with ``COLUMNS``."""
    ident, pair, price, ts_ms, sources = row
    assert isinstance(ident, int)
    assert isinstance(ts_ms, int)
    return Tick(ident, str(pair), Decimal(str(price)), ts_ms, tuple(str(sources).split(",")))


def describe(tick: Tick) -> str:
    """A tick's payload in words, for error messages."""
    return f"{tick.pair} {tick.price} at ts_ms={tick.ts_ms} from {','.join(tick.sources)}"


async def ticks_above(conn: aiosqlite.Connection, after: int) -> list[Tick]:
    """Every stored tick with id greater than ``after``, in id order."""
    sql = f"SELECT {COLUMNS} FROM ticks WHERE id > ? ORDER BY id"  # noqa: S608 - fixed text
    return [to_tick(r) for r in await conn.execute_fetchall(sql, (after,))]


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite said another connection holds the lock (worth waiting for)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


async def migrate(conn: aiosqlite.Connection, path: Path) -> None:
    """Set WAL and full sync, and apply the migrations ``path`` still lacks."""
    await conn.execute_fetchall("PRAGMA journal_mode=WAL")
    await conn.execute_fetchall("PRAGMA synchronous=FULL")
    version = await scalar(conn, "PRAGMA user_version")
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}, newer than this release understands "
            f"({len(MIGRATIONS)}); upgrade bittrade-feed"
        )
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        if isinstance(step, AddColumn):
            await _add_column(conn, step, number)
            continue
        # executescript commits first; the version bump lands in the same transaction.
        await conn.executescript(
            f"BEGIN IMMEDIATE; {step}; PRAGMA user_version = {number}; COMMIT;"
        )


async def _add_column(conn: aiosqlite.Connection, step: AddColumn, number: int) -> None:
    """Add the column (if missing) and bump the version in one write transaction."""
    await conn.execute_fetchall("BEGIN IMMEDIATE")
    try:
        columns = await conn.execute_fetchall(f"PRAGMA table_info({step.table})")
        if step.column not in {str(row[1]) for row in columns}:
            await conn.execute_fetchall(
                f"ALTER TABLE {step.table} ADD COLUMN {step.column} {step.declaration}"
            )
        await conn.execute_fetchall(f"PRAGMA user_version = {number}")
    except BaseException:
        await conn.execute_fetchall("ROLLBACK")
        raise
    await conn.execute_fetchall("COMMIT")


async def scalar(conn: aiosqlite.Connection, sql: str) -> int:
    """The one number ``sql`` selects."""
    (row,) = await conn.execute_fetchall(sql)
    return int(row[0])


async def size_of(conn: aiosqlite.Connection) -> int:
    """Bytes used by the database (page count times page size)."""
    return await scalar(
        conn, "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    )


async def floor_of(conn: aiosqlite.Connection) -> int:
    """The stored history floor (0 before the meta table has one)."""
    rows = await conn.execute_fetchall("SELECT value FROM meta WHERE key = 'history_floor'")
    return max((int(r[0]) for r in rows), default=0)


async def insert(conn: aiosqlite.Connection, draft: TickDraft) -> Tick:
    """Insert a locally made price under the next id and return it with that id."""
    row = await conn.execute_insert(
        "INSERT INTO ticks (pair, price, ts_ms, sources) VALUES (?, ?, ?, ?)",
        (draft.pair, str(draft.price), draft.ts_ms, ",".join(draft.sources)),
    )
    assert row is not None
    return Tick(int(row[0]), draft.pair, draft.price, draft.ts_ms, draft.sources)
