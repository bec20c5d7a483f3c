"""The SQLite store: schema, ids, queries, retention, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bittrade_feed.errors import StoreError
from bittrade_feed.models import TickDraft
from bittrade_feed.store.sqlite import MIGRATIONS, Store


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


async def test_check_writable_reports_locked_database(tmp_path: Path) -> None:
    """check_writable() fails while another connection holds the write lock."""
    path = tmp_path / "f.db"
    async with await Store.open(path) as store:
        other = sqlite3.connect(path, timeout=0)
        other.execute("BEGIN IMMEDIATE")
        await store._db.execute("PRAGMA busy_timeout=0")
        with pytest.raises(StoreError, match="not writable"):
            await store.check_writable()
        other.rollback()
        other.close()
        await store.check_writable()


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
