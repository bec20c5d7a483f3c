"""The SQLite store: schema, ids, queries, retention, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bittrade_feed.errors import StoreConflict, StoreError, StoreOutOfOrder, StoreTimeout
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.store.lane import Job, Lane
from bittrade_feed.store.schema import AddColumn
from bittrade_feed.store.sqlite import MIGRATIONS, Store, WriteStatus
from tests.test_ticklog import SLOW, rigged, stored


def draft(pair: str = "BTC-USD", price: str = "100.5", ts_ms: int = 1000) -> TickDraft:
    return TickDraft(pair, Decimal(price), ts_ms, ("kraken", "bitstamp"))


async def test_schema_versioned_and_wal(tmp_path: Path) -> None:
    """A new database gets the latest schema version, WAL and full sync."""
    store = await Store.open(tmp_path / "db" / "feed.sqlite3")
    await store.close()
    con = sqlite3.connect(tmp_path / "db" / "feed.sqlite3")
    assert con.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


async def test_ids_increase_across_pairs_and_restarts(tmp_path: Path) -> None:
    """Ids are global, strictly increasing, and continue after reopening."""
    path = tmp_path / "feed.sqlite3"
    async with await Store.open(path) as store:
        a = await store.insert(draft("BTC-USD"))
        b = await store.insert(draft("ETH-USD"))
    async with await Store.open(path) as store:
        c = await store.insert(draft("BTC-USD"))
        assert await store.max_id() == c.id
    assert a.id < b.id < c.id


async def test_ids_never_reused_after_retention(tmp_path: Path) -> None:
    """Deleting old rows never lets an id come back."""
    async with await Store.open(tmp_path / "f.db") as store:
        for ts in (1, 2, 3):
            await store.insert(draft(ts_ms=ts))
        assert await store.delete_older_than(10) == 2
        nxt = await store.insert(draft(ts_ms=20))
        assert nxt.id == 4


async def test_prices_round_trip_as_exact_decimal_text(tmp_path: Path) -> None:
    """A price goes in and comes out as the same decimal string."""
    async with await Store.open(tmp_path / "f.db") as store:
        await store.insert(draft(price="73380.60000"))
        (tick,) = (await store.latest(["BTC-USD"])).values()
        assert str(tick.price) == "73380.60000"
        assert tick.sources == ("kraken", "bitstamp")


async def test_latest_per_pair(tmp_path: Path) -> None:
    """latest() returns each pair's newest tick and omits pairs with none."""
    async with await Store.open(tmp_path / "f.db") as store:
        await store.insert(draft("BTC-USD", "1"))
        await store.insert(draft("ETH-USD", "2"))
        await store.insert(draft("BTC-USD", "3"))
        latest = await store.latest(["BTC-USD", "ETH-USD", "LTC-USD"])
    assert {p: str(t.price) for p, t in latest.items()} == {"BTC-USD": "3", "ETH-USD": "2"}


async def test_between_is_half_open_ordered_and_limited(tmp_path: Path) -> None:
    """between() keeps since <= ts < until, oldest first, at most limit rows."""
    async with await Store.open(tmp_path / "f.db") as store:
        for ts in (10, 20, 30, 40):
            await store.insert(draft(ts_ms=ts))
        await store.insert(draft("ETH-USD", ts_ms=25))
        rows = await store.between("BTC-USD", 20, 40, 10)
        assert [t.ts_ms for t in rows] == [20, 30]
        assert [t.ts_ms for t in await store.between("BTC-USD", 0, 100, 2)] == [10, 20]


async def test_since_id_filters_pairs_and_limits(tmp_path: Path) -> None:
    """since_id() returns later ticks of the asked pairs only, capped."""
    async with await Store.open(tmp_path / "f.db") as store:
        ids = [(await store.insert(draft(p))).id for p in ("BTC-USD", "ETH-USD") * 3]
        rows = await store.since_id(ids[1], ["BTC-USD"], 10)
        assert [t.id for t in rows] == [ids[2], ids[4]]
        assert len(await store.since_id(0, ["BTC-USD", "ETH-USD"], 4)) == 4


async def test_retention_keeps_latest_of_each_pair(tmp_path: Path) -> None:
    """Retention deletes old rows but never a pair's only (latest) price."""
    async with await Store.open(tmp_path / "f.db") as store:
        await store.insert(draft("ETH-USD", ts_ms=1))
        await store.insert(draft("BTC-USD", ts_ms=2))
        await store.insert(draft("BTC-USD", ts_ms=3))
        assert await store.delete_older_than(1_000) == 1
        assert set(await store.latest(["BTC-USD", "ETH-USD"])) == {"BTC-USD", "ETH-USD"}
        assert await store.count() == 2
        assert await store.min_id() == 1


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer release is refused with a clear StoreError."""
    path = tmp_path / "f.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this release"):
        await Store.open(path)


async def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    """A database path under a regular file gives StoreError naming the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open database"):
        await Store.open(blocker / "feed.sqlite3")


async def test_locked_database_fails_writes_within_timeout_and_recovers(tmp_path: Path) -> None:
    """A write lock held elsewhere past the timeout fails the write, not reads; then it heals."""
    path = tmp_path / "f.db"
    async with await Store.open(path, timeout=0.3) as store:
        await store.insert(draft(ts_ms=1))
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreError, match="cannot store BTC-USD"):
            await store.append(draft(ts_ms=2), after=1)
        assert loop.time() - started < 2.0
        status = store.write_status()
        assert not status.ok
        assert "not writable" in status.detail
        # Readers never queue behind the writer.
        assert [t.id for t in await store.since_id(0, ["BTC-USD"], 10)] == [1]
        assert await store.max_id() == 1
        other.rollback()
        other.close()
        assert [t.id for t in await store.append(draft(ts_ms=3), after=1)] == [2]
        assert store.write_status().ok


def refuse_writes(path: Path, message: str = "disk is full") -> Callable[[], None]:
    """Make every insert into ``path`` fail inside SQLite (root ignores a read-only mode)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(
        f"CREATE TRIGGER refuse BEFORE INSERT ON ticks BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )

    def heal() -> None:
        con.execute("DROP TRIGGER refuse")
        con.close()

    return heal


async def test_failing_writes_are_errors_and_status_says_why(tmp_path: Path) -> None:
    """While every write fails, each is a StoreError and write_status names the reason."""
    path = tmp_path / "f.db"
    async with await Store.open(path) as store:
        await store.insert(draft(ts_ms=1))
        heal = refuse_writes(path)
        for ts in (2, 3):
            with pytest.raises(StoreError, match="disk is full"):
                await store.append(draft(ts_ms=ts), after=1)
        assert store.write_status() == WriteStatus(
            False, "database is not writable: cannot store BTC-USD price: disk is full"
        )
        assert await store.max_id() == 1
        heal()
        assert [t.id for t in await store.append(draft(ts_ms=4), after=1)] == [2]
        assert store.write_status() == WriteStatus(True, "writable")


ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT MAX(x) FROM c"


async def query(sql: str, job: Job) -> list[Any]:
    return list(await job.conn.execute_fetchall(sql))


async def test_interrupt_ends_a_runaway_call_and_the_lane_goes_on(tmp_path: Path) -> None:
    """A call past its deadline gets StoreTimeout at once, is interrupted, and the next one runs."""
    lane = await Lane.open(tmp_path / "w.db", "t", [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreTimeout, match=r"within 0\.2 s"):
        await lane.run(partial(query, ENDLESS), 0.2, "runaway")
    assert loop.time() - started < 1.0
    assert await lane.run(partial(query, "SELECT 7"), 5, "x") == [(7,)]
    await lane.close(5)


async def test_a_deadline_between_two_statements_still_interrupts_the_next(
    tmp_path: Path,
) -> None:
    """A deadline that passes while no statement of the job runs still ends its next one."""
    lane = await Lane.open(tmp_path / "w.db", "t", [])

    async def job(job: Job) -> list[Any]:
        await asyncio.sleep(0.3)  # the deadline passes here: SQLite drops that interrupt
        return await query(ENDLESS, job)

    with pytest.raises(StoreTimeout, match=r"within 0\.1 s"):
        await lane.run(job, 0.1, "gap")
    assert await lane.run(partial(query, "SELECT 7"), 5, "x") == [(7,)]
    await lane.close(5)


async def test_retention_raises_history_floor_persistently(tmp_path: Path) -> None:
    """Retention records the highest id it deleted; it survives a restart."""
    path = tmp_path / "f.db"
    async with await Store.open(path) as store:
        assert store.history_floor == 0
        await store.insert(draft("ETH-USD", ts_ms=1))
        for ts in (2, 3, 4):
            await store.insert(draft("BTC-USD", ts_ms=ts))
        assert await store.delete_older_than(1_000) == 2
        # Ids 2 and 3 are gone; ETH's id 1 is kept as that pair's latest.
        assert store.history_floor == 3
        assert store.rows == 2
        await store.record_hole(5, 9)
        assert store.history_floor == 9
        await store.record_hole(2, 4)
        assert store.history_floor == 9
    async with await Store.open(path) as store:
        assert store.history_floor == 9
        assert store.rows == 2


async def test_migration_finds_holes_retention_left_before_it(tmp_path: Path) -> None:
    """A version-1 database already thinned by retention gets the highest missing id as floor."""
    path = tmp_path / "f.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    for ident in (1, 2, 3, 4, 5, 6, 7):
        con.execute("INSERT INTO ticks VALUES (?, 'BTC-USD', '1', ?, 'kraken')", (ident, ident))
    con.execute("DELETE FROM ticks WHERE id IN (2, 4, 5)")
    con.close()
    async with await Store.open(path) as store:
        assert store.history_floor == 5
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DELETE FROM ticks WHERE id = 7")  # the newest id gone too
    con.execute("UPDATE meta SET value = 0")
    con.execute("PRAGMA user_version = 1")
    con.execute("DROP TABLE meta")
    con.close()
    async with await Store.open(path) as store:
        assert store.history_floor == 7


async def test_apply_is_idempotent_and_names_a_conflict(tmp_path: Path) -> None:
    """apply(): a new id is stored, the same payload again is a no-op, another one is refused."""
    async with await Store.open(tmp_path / "f.db") as store:
        tick = Tick(5, "BTC-USD", Decimal("1.50"), 10, ("kraken",))
        assert await store.apply(tick, after=0) == (True, [tick])
        assert await store.apply(tick, after=5) == (False, [])
        other = Tick(5, "BTC-USD", Decimal("1.5"), 10, ("kraken",))
        with pytest.raises(StoreConflict) as info:
            await store.apply(other, after=5)
        assert str(info.value) == (
            "tick id 5 is stored as BTC-USD 1.50 at ts_ms=10 from kraken "
            "but arrived as BTC-USD 1.5 at ts_ms=10 from kraken"
        )
        with pytest.raises(StoreOutOfOrder, match="increasing order"):
            await store.apply(Tick(3, "BTC-USD", Decimal(1), 1, ("kraken",)), after=5)
        assert store.write_status().ok
        # Local ids continue above an applied one.
        (nxt,) = await store.append(draft(), after=5)
        assert nxt.id == 6


KILLER = """
import asyncio, os, sys
from decimal import Decimal
from pathlib import Path
from bittrade_feed.models import TickDraft
from bittrade_feed.store.sqlite import Store
async def main():
    store = await Store.open(Path(sys.argv[1]))
    tick = await store.insert(TickDraft("BTC-USD", Decimal("1.5"), 1, ("kraken",)))
    print(tick.id, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_committed_tick_survives_kill_9(tmp_path: Path) -> None:
    """A price reported as stored is still there after the process is SIGKILLed."""
    path = tmp_path / "f.db"
    with subprocess.Popen(
        [sys.executable, "-c", KILLER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    ) as proc:
        try:
            assert proc.stdout is not None
            tick_id = int(proc.stdout.readline())
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    async with await Store.open(path) as store:
        assert await store.max_id() == tick_id
        assert str((await store.latest(["BTC-USD"]))["BTC-USD"].price) == "1.5"


async def test_database_threads_are_named_daemons(tmp_path: Path) -> None:
    """aiosqlite's two connection threads are called db-w and db-r and never block exit."""
    async with await Store.open(tmp_path / "f.db"):
        threads = [t for t in threading.enumerate() if t.name in ("db-w", "db-r")]
        assert sorted(t.name for t in threads) == ["db-r", "db-w"]
        assert all(t.daemon for t in threads)
    await asyncio.sleep(0.1)  # the threads end once their connections are closed
    assert [t.name for t in threading.enumerate() if t.name in ("db-w", "db-r")] == []


STUCK = """
import asyncio, sys, time
from decimal import Decimal
from pathlib import Path
from bittrade_feed.errors import StoreTimeout
from bittrade_feed.models import TickDraft
from bittrade_feed.store.sqlite import Store
async def main():
    store = await Store.open(Path(sys.argv[1]), timeout=0.3)
    # A commit stuck below SQLite, like on a frozen disk: an interrupt cannot end it.
    conn = store._writer.conn
    await conn.create_function("hang", 0, lambda: time.sleep(120))
    await conn.execute_fetchall("CREATE TRIGGER h AFTER INSERT ON ticks BEGIN SELECT hang(); END")
    try:
        await store.append(TickDraft("BTC-USD", Decimal("1.5"), 1, ("kraken",)), after=0)
    except StoreTimeout:
        print("timeout", flush=True)
    print(store.write_status().ok, flush=True)
    await store.close()
    print("closed", flush=True)
asyncio.run(main())
"""


def test_a_write_stuck_below_sqlite_keeps_neither_close_nor_exit_waiting(tmp_path: Path) -> None:
    """A write stuck for minutes times out, close gives up on it, and the process exits.

    The hang lasts 120 s: a run under the 60 s limit shows nothing waited for it."""
    done = subprocess.run(
        [sys.executable, "-c", STUCK, str(tmp_path / "f.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.split("\n") == ["timeout", "False", "closed", ""]


async def test_a_write_cancelled_at_shutdown_is_rolled_back_by_the_next(tmp_path: Path) -> None:
    """A transaction task cancelled mid-statement (as the event loop's shutdown does) leaves
    nothing open: the next write rolls it back, then commits and reads back its own tick."""
    path = tmp_path / "f.db"
    await (await Store.open(path)).close()
    rigged(path, filler=3000)
    async with await Store.open(path) as store:
        slow = asyncio.create_task(store.append(draft(SLOW), after=0))
        await asyncio.sleep(0.05)  # the insert is running on the writer's thread
        (job,) = store._writer._jobs  # the task the shutdown would cancel
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        ticks = await store.append(draft(ts_ms=2), after=0)
        assert [(t.id, t.pair) for t in ticks] == [(1, "BTC-USD")]
        assert store.write_status().ok
    assert list(stored(path).values()) == [("BTC-USD", "100.5", 2, "kraken,bitstamp")]


async def test_the_format_column_step_runs_again_safely(tmp_path: Path) -> None:
    """The endpoint format step adds its column once: a database set back to the version
    before it (by hand) opens again with its formats kept; one without it gets the default."""
    before = next(i for i, m in enumerate(MIGRATIONS) if isinstance(m, AddColumn))
    path = tmp_path / "f.db"
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(
        "INSERT INTO alert_endpoints (id, owner, url, secret, created_ms, format) "
        "VALUES ('ep_1', 'a', 'https://x/', 's', 1, 'alertmanager')"
    )
    con.execute(f"PRAGMA user_version = {before}")
    con.close()
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path, isolation_level=None)
    assert con.execute("SELECT format FROM alert_endpoints").fetchall() == [("alertmanager",)]
    assert con.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    # A database from before the step: the column comes with the default.
    con.execute("ALTER TABLE alert_endpoints DROP COLUMN format")
    con.execute(f"PRAGMA user_version = {before}")
    con.close()
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path, isolation_level=None)
    assert con.execute("SELECT format FROM alert_endpoints").fetchall() == [("standard",)]
    con.close()
