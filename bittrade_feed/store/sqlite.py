"""Every accepted price, in SQLite: durable before anyone is told about it.

WAL with ``synchronous=FULL``: a committed tick survives kill -9 and power loss, and
readers never block the single writer. Ids come from ``AUTOINCREMENT`` so they never go
back, even after retention deletes rows. Prices are stored as decimal text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType

import aiosqlite

from bittrade_feed.errors import StoreError
from bittrade_feed.models import Tick, TickDraft

# One entry per schema version; PRAGMA user_version says how many have been applied.
MIGRATIONS: tuple[str, ...] = (
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
)

_COLUMNS = "id, pair, price, ts_ms, sources"


class Store:
    """An open price database. Use ``async with Store.open(path) as store``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        store = cls(db, path)
        try:
            await store._prepare()
        except sqlite3.Error as exc:
            await db.close()
            raise StoreError(f"cannot prepare database {path}: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return store

    async def _prepare(self) -> None:
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        (version,) = await self._one("PRAGMA user_version")
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this release "
                f"understands ({len(MIGRATIONS)}); upgrade bittrade-feed"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump lands in the same transaction.
            await self._db.executescript(
                f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
            )

    async def close(self) -> None:
        """Close the connection (pending writes are already committed)."""
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def insert(self, draft: TickDraft) -> Tick:
        """Commit one price and return it with its id."""
        try:
            cursor = await self._db.execute(
                "INSERT INTO ticks (pair, price, ts_ms, sources) VALUES (?, ?, ?, ?)",
                (draft.pair, str(draft.price), draft.ts_ms, ",".join(draft.sources)),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store {draft.pair} price: {exc}") from exc
        assert cursor.lastrowid is not None
        return Tick(cursor.lastrowid, draft.pair, draft.price, draft.ts_ms, draft.sources)

    async def latest(self, pairs: Iterable[str]) -> dict[str, Tick]:
        """The newest tick of each pair that has one."""
        found: dict[str, Tick] = {}
        for pair in pairs:
            rows = await self._all(
                f"SELECT {_COLUMNS} FROM ticks WHERE pair = ? ORDER BY id DESC LIMIT 1", (pair,)
            )
            if rows:
                found[pair] = rows[0]
        return found

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        """Ticks with id greater than ``after`` for ``pairs``, oldest first, at most ``limit``."""
        marks = ",".join("?" * len(pairs))
        return await self._all(
            f"SELECT {_COLUMNS} FROM ticks WHERE id > ? AND pair IN ({marks}) ORDER BY id LIMIT ?",
            (after, *pairs, limit),
        )

    async def between(self, pair: str, since_ms: int, until_ms: int, limit: int) -> list[Tick]:
        """Ticks of ``pair`` with since <= ts < until, oldest first, at most ``limit``."""
        return await self._all(
            f"SELECT {_COLUMNS} FROM ticks WHERE pair = ? AND ts_ms >= ? AND ts_ms < ? "
            "ORDER BY ts_ms, id LIMIT ?",
            (pair, since_ms, until_ms, limit),
        )

    async def recent(self, limit: int) -> list[Tick]:
        """The newest ``limit`` ticks of all pairs, oldest first (to seed the replay ring)."""
        rows = await self._all(f"SELECT {_COLUMNS} FROM ticks ORDER BY id DESC LIMIT ?", (limit,))
        return rows[::-1]

    async def min_id(self) -> int:
        """The lowest id still kept (0 for an empty database)."""
        (n,) = await self._one("SELECT COALESCE(MIN(id), 0) FROM ticks")
        return int(n)

    async def max_id(self) -> int:
        """The highest id ever assigned (0 for an empty database)."""
        row = await self._one("SELECT seq FROM sqlite_sequence WHERE name = 'ticks'")
        return int(row[0]) if row else 0

    async def delete_older_than(self, cutoff_ms: int) -> int:
        """Delete ticks older than ``cutoff_ms``, always keeping each pair's latest."""
        try:
            cursor = await self._db.execute(
                "DELETE FROM ticks WHERE ts_ms < ? AND id NOT IN "
                "(SELECT MAX(id) FROM ticks GROUP BY pair)",
                (cutoff_ms,),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"retention delete failed: {exc}") from exc
        return cursor.rowcount

    async def check_writable(self) -> None:
        """Take and release the write lock; ``StoreError`` if the database refuses."""
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            await self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StoreError(f"database is not writable: {exc}") from exc

    async def size_bytes(self) -> int:
        """Bytes used by the database file (page count times page size)."""
        (pages,) = await self._one("PRAGMA page_count")
        (size,) = await self._one("PRAGMA page_size")
        return int(pages) * int(size)

    async def count(self) -> int:
        """Rows in the ticks table."""
        (n,) = await self._one("SELECT COUNT(*) FROM ticks")
        return int(n)

    async def _one(self, sql: str) -> sqlite3.Row | tuple[int, ...]:
        try:
            async with self._db.execute(sql) as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc
        return row if row is not None else ()

    async def _all(self, sql: str, params: Sequence[object]) -> list[Tick]:
        try:
            async with self._db.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"database read failed: {exc}") from exc
        return [
            Tick(int(r[0]), str(r[1]), Decimal(r[2]), int(r[3]), tuple(str(r[4]).split(",")))
            for r in rows
        ]
