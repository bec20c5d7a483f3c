"""Every accepted price, in SQLite: durable before anyone is told about it.

WAL with ``synchronous=FULL``: a committed tick survives kill -9 and power loss, and
readers never block the writer. Ids come from ``AUTOINCREMENT`` so they never go back,
even after retention deletes rows. Prices are stored as decimal text.

Two aiosqlite connections, each on its own thread (``store.lane``): the writer does
nothing but ``BEGIN IMMEDIATE ... COMMIT`` transactions, one per call, each run to its
end as its own task; every query runs on the reader. Every call has a deadline
(``database.timeout``). Nothing outside a write call can open, share or hold the
writer's transaction, so a probe can never roll back a tick.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import aiosqlite

from bittrade_feed.errors import (
    StoreConflict,
    StoreError,
    StoreOutOfOrder,
    StoreRejected,
    StoreTimeout,
)
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.store.lane import Job, Lane
from bittrade_feed.store.schema import (
    COLUMNS,
    MIGRATIONS,
    describe,
    floor_of,
    insert,
    is_busy,
    migrate,
    scalar,
    size_of,
    ticks_above,
    to_row,
    to_tick,
)

__all__ = ["MIGRATIONS", "Store", "WriteStatus"]

SIZE_PERIOD = 1.0
"""Seconds between two reads of the database size for the size gauge."""

T = TypeVar("T")
Rows = Callable[[T], int]
"""How many rows a write's result added to the ticks table (negative: deleted)."""

DEFAULT_TIMEOUT = 5.0
BUSY_SLICE_MS = 50
"""The writer waits for another process's lock in slices this long, so it can give up."""
STUCK_GRACE = 0.5
"""A write still running this long past its timeout is stuck below SQLite (a frozen disk):
lock waits give up by themselves at the deadline."""
RETENTION_BATCH = 5000
"""Rows deleted per retention transaction: each one stays well inside the timeout."""


@dataclass(frozen=True, slots=True)
class WriteStatus:
    """Whether the writer's latest attempt committed, and why not if it did not."""

    ok: bool
    detail: str


class Store:
    """An open price database. Use ``async with await Store.open(path) as store``."""

    def __init__(self, path: Path, writer: Lane, reader: Lane, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._writer = writer
        self._reader = reader
        self.history_floor = 0
        """The highest id deleted or recorded missing (0: history is complete).

        A resume point ``last_id < history_floor`` cannot be replayed completely."""
        self.rows = 0
        """Rows in the ticks table, kept current by every write (for /metrics)."""
        self._size = 0
        self._size_read_at = -SIZE_PERIOD
        self._status = WriteStatus(True, "writable")
        self._unsettled = False
        """A transaction cancelled mid-way (event loop shutdown) may still be open."""

    @classmethod
    async def open(cls, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await Lane.open(path, "db-w", [f"PRAGMA busy_timeout={BUSY_SLICE_MS}"])
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            await writer.run(
                lambda job: migrate(job.conn, path), timeout, f"cannot prepare database {path}"
            )
            busy_ms = round(timeout * 1000)
            setup = [f"PRAGMA busy_timeout={busy_ms}", "PRAGMA query_only=1"]
            reader = await Lane.open(path, "db-r", setup)
        except (sqlite3.Error, StoreError) as exc:
            await writer.close(timeout)
            raise StoreError(str(exc)) from exc
        store = cls(path, writer, reader, timeout)
        try:
            store.history_floor = await store._read(floor_of, "cannot read history floor")
            store.rows = await store.count()
            store._size = await store._read(size_of, "cannot read database size")
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close both connections once their queued calls are done (or timed out)."""
        await self._writer.close(self.timeout)
        await self._reader.close(self.timeout)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- writes: only on the writer, one transaction per call, each run to its end -----

    def write_status(self) -> WriteStatus:
        """The writer's health: its latest outcome, or a write stuck past the timeout."""
        running = self._writer.running_since
        if running is not None:
            waited = time.monotonic() - running
            if waited > self.timeout:
                return WriteStatus(
                    False,
                    f"database is not writable: a write has waited {waited:.1f} s "
                    f"(limit {self.timeout:g} s)",
                )
        return self._status

    async def _write(
        self, body: Callable[[aiosqlite.Connection], Awaitable[T]], what: str, rows: Rows[T]
    ) -> T:
        running = self._writer.running_since
        if running is not None and time.monotonic() - running > self.timeout + STUCK_GRACE:
            # Queueing behind a stuck call would only pile up work that lands much later.
            raise StoreTimeout(f"{what}: {self.write_status().detail}")
        try:
            return await self._writer.run(
                partial(self._transaction, body, rows), self.timeout, what
            )
        except StoreRejected:
            raise
        except StoreError as exc:
            self._status = WriteStatus(False, f"database is not writable: {exc}")
            raise

    async def _transaction(
        self, body: Callable[[aiosqlite.Connection], Awaitable[T]], rows: Rows[T], job: Job
    ) -> T:
        # The writer's only job: its caller may leave, but it runs to COMMIT or ROLLBACK.
        try:
            return await self._commit(body, rows, job.conn, job)
        except asyncio.CancelledError:
            # Only the event loop's shutdown cancels a job: do not wait on a thread that
            # may be stuck; the next transaction (or closing) rolls this one back.
            self._unsettled = True
            raise

    async def _commit(
        self,
        body: Callable[[aiosqlite.Connection], Awaitable[T]],
        rows: Rows[T],
        conn: aiosqlite.Connection,
        job: Job,
    ) -> T:
        if self._unsettled or conn.in_transaction:
            # A transaction left open never committed (an interrupted ROLLBACK, or one
            # cancelled at shutdown): drop it first. aiosqlite's queue runs this ROLLBACK
            # after anything that one still had queued.
            self._unsettled = False
            await conn.rollback()
        await _begin(job)
        try:
            if job.given_up():
                # The lock came free after the caller stopped waiting: do not write
                # behind its back (the outcome stays known).
                raise StoreTimeout("the caller gave up before the write began")
            result = await body(conn)
            await conn.commit()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                with suppress(sqlite3.Error):
                    await conn.rollback()  # sqlite3 skips it when no transaction is open
            if isinstance(exc, sqlite3.Error):
                self._status = WriteStatus(False, f"database is not writable: {exc}")
            elif isinstance(exc, StoreRejected):
                self._status = WriteStatus(True, "writable")
            raise
        self.rows += rows(result)
        if time.monotonic() - self._size_read_at >= SIZE_PERIOD:
            # Only a gauge: never fail a committed write for it, and at 100 ticks/s do
            # not spend a fifth of the writer's round trips on it.
            self._size_read_at = time.monotonic()
            with suppress(sqlite3.Error):
                self._size = await size_of(conn)
        self._status = WriteStatus(True, "writable")
        return result

    async def append(self, draft: TickDraft, after: int) -> list[Tick]:
        """Commit ``draft``; return every tick above ``after`` in id order (the new one last)."""

        async def body(conn: aiosqlite.Connection) -> list[Tick]:
            await insert(conn, draft)
            # Read back inside the transaction: these rows are exactly what COMMIT makes
            # durable, including any a timed-out call committed earlier.
            return await ticks_above(conn, after)

        return await self._write(body, f"cannot store {draft.pair} price", _one)

    async def apply(self, tick: Tick, after: int) -> tuple[bool, list[Tick]]:
        """Store ``tick`` under its own id unless already there; ``StoreConflict`` if it differs.

        Returns whether this call stored it, and every tick above ``after`` in id order.
        ``StoreOutOfOrder`` if the id is new but not above ``after`` (it could not be handed
        on in order).
        """

        async def body(conn: aiosqlite.Connection) -> tuple[bool, list[Tick]]:
            sql = f"SELECT {COLUMNS} FROM ticks WHERE id = ?"
            found = list(await conn.execute_fetchall(sql, (tick.id,)))
            if found:
                stored = to_tick(found[0])
                if to_row(stored) != to_row(tick):
                    raise StoreConflict(tick.id, describe(stored), describe(tick))
                return False, await ticks_above(conn, after)
            if tick.id <= after:
                raise StoreOutOfOrder(tick.id, after)
            await conn.execute_fetchall(
                f"INSERT INTO ticks ({COLUMNS}) VALUES (?, ?, ?, ?, ?)", to_row(tick)
            )
            return True, await ticks_above(conn, after)

        return await self._write(body, f"cannot apply tick {tick.id}", lambda r: int(r[0]))

    async def insert(self, draft: TickDraft) -> Tick:
        """Commit one price and return it with its id (the tick log uses ``append``)."""
        return await self._write(partial(insert, draft=draft), f"cannot store {draft.pair}", _one)

    async def transact(self, body: Callable[[aiosqlite.Connection], Awaitable[T]], what: str) -> T:
        """Run ``body`` as one writer transaction (``BEGIN IMMEDIATE`` to ``COMMIT``).

        For tables other than ticks (alerts): it shares the writer lane, so its statements
        never interleave with a tick's, and it runs to its end even if the caller leaves.
        ``StoreError`` naming ``what`` on failure; nothing is committed then.
        """
        return await self._write(body, what, lambda _: 0)

    async def query(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]], what: str) -> T:
        """Run the read-only ``fn`` on the reader connection; ``StoreError`` naming ``what``."""
        return await self._read(fn, what)

    async def delete_older_than(self, cutoff_ms: int) -> int:
        """Delete ticks older than ``cutoff_ms``, always keeping each pair's latest."""
        total = 0
        while True:
            deleted = await self._write(
                partial(self._delete_batch, cutoff_ms), "retention delete failed", lambda n: -n
            )
            total += deleted
            if deleted < RETENTION_BATCH:
                return total

    async def _delete_batch(self, cutoff_ms: int, conn: aiosqlite.Connection) -> int:
        found = await conn.execute_fetchall(
            "SELECT id FROM ticks WHERE ts_ms < ? AND id NOT IN "
            "(SELECT MAX(id) FROM ticks GROUP BY pair) ORDER BY id LIMIT ?",
            (cutoff_ms, RETENTION_BATCH),
        )
        ids = [int(r[0]) for r in found]
        if ids:
            await self._raise_floor(conn, max(ids))
            await conn.executemany("DELETE FROM ticks WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    async def record_hole(self, lo: int, hi: int) -> None:
        """Record that ids ``lo`` to ``hi`` are missing for good (resumes below ``hi`` resync)."""
        if not 0 < lo <= hi:
            raise ValueError(f"not a range of ids: {lo} to {hi}")
        await self._write(partial(self._raise_floor, hi=hi), "cannot record hole", lambda _: 0)

    async def _raise_floor(self, conn: aiosqlite.Connection, hi: int) -> None:
        # Raised in memory before the commit: a floor too high only costs a resync,
        # one too low would let a resume skip deleted ids silently.
        self.history_floor = max(self.history_floor, hi)
        await conn.execute_fetchall(
            "UPDATE meta SET value = MAX(value, ?) WHERE key = 'history_floor'", (hi,)
        )

    # -- reads: only on the reader ------------------------------------------------------

    async def _read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]], what: str) -> T:
        return await self._reader.run(lambda job: fn(job.conn), self.timeout, what)

    async def latest(self, pairs: Iterable[str]) -> dict[str, Tick]:
        """The newest tick of each pair that has one."""
        wanted = tuple(pairs)

        async def query(conn: aiosqlite.Connection) -> dict[str, Tick]:
            found: dict[str, Tick] = {}
            for pair in wanted:
                rows = await conn.execute_fetchall(
                    f"SELECT {COLUMNS} FROM ticks WHERE pair = ? ORDER BY id DESC LIMIT 1",
                    (pair,),
                )
                found.update((pair, to_tick(row)) for row in rows)
            return found

        return await self._read(query, "database read failed")

    async def since_id(self, after: int, pairs: Sequence[str], limit: int) -> list[Tick]:
        """Ticks with id greater than ``after`` for ``pairs``, oldest first, at most ``limit``."""
        marks = ",".join("?" * len(pairs))
        return await self._ticks(
            f"SELECT {COLUMNS} FROM ticks WHERE id > ? AND pair IN ({marks}) ORDER BY id LIMIT ?",
            (after, *pairs, limit),
        )

    async def between(self, pair: str, since_ms: int, until_ms: int, limit: int) -> list[Tick]:
        """Ticks of ``pair`` with since <= ts < until, oldest first, at most ``limit``."""
        return await self._ticks(
            f"SELECT {COLUMNS} FROM ticks WHERE pair = ? AND ts_ms >= ? AND ts_ms < ? "
            "ORDER BY ts_ms, id LIMIT ?",
            (pair, since_ms, until_ms, limit),
        )

    async def recent(self, limit: int) -> list[Tick]:
        """The newest ``limit`` ticks of all pairs, oldest first (to seed the replay ring)."""
        rows = await self._ticks(f"SELECT {COLUMNS} FROM ticks ORDER BY id DESC LIMIT ?", (limit,))
        return rows[::-1]

    async def min_id(self) -> int:
        """The lowest id still kept (0 for an empty database)."""
        return await self._number("SELECT COALESCE(MIN(id), 0) FROM ticks")

    async def max_id(self) -> int:
        """The highest id ever assigned (0 for an empty database)."""
        return await self._number(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'ticks'), 0)"
        )

    async def count(self) -> int:
        """Rows in the ticks table (a full count; /metrics uses ``rows``)."""
        return await self._number("SELECT COUNT(*) FROM ticks")

    def size_bytes(self) -> int:
        """Bytes used by the database (page count times page size), as of the last write."""
        return self._size

    async def _number(self, sql: str) -> int:
        return await self._read(partial(scalar, sql=sql), "database read failed")

    async def _ticks(self, sql: str, params: Sequence[object]) -> list[Tick]:
        async def query(conn: aiosqlite.Connection) -> list[Tick]:
            return [to_tick(r) for r in await conn.execute_fetchall(sql, params)]

        return await self._read(query, "database read failed")


async def _begin(job: Job) -> None:
    # SQLite's own busy wait cannot be interrupted, so wait in short slices and stop
    # as soon as the caller has given up.
    while True:
        try:
            await job.conn.execute_fetchall("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or job.given_up():
                raise
        else:
            return


def _one(_: object) -> int:
    return 1
