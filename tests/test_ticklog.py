"""The tick log: commit, then hand on in id order, exactly once, whatever fails on the way."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bittrade_feed.errors import StoreConflict, StoreError, StoreOutOfOrder
from bittrade_feed.feed.ticklog import TickLog
from bittrade_feed.models import Tick, TickDraft
from bittrade_feed.ops.metrics import Metrics, new_registry
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock

SLOW = "SLOW-USD"
"""Inserts of this pair run a heavy query inside the transaction (to be cut off mid-write)."""
BAD = "BAD-USD"
"""Inserts of this pair always fail inside SQLite."""


def draft(pair: str = "BTC-USD", price: str = "100.5", ts_ms: int = 1000) -> TickDraft:
    return TickDraft(pair, Decimal(price), ts_ms, ("kraken", "bitstamp"))


def rigged(path: Path, filler: int = 1500) -> None:
    """Add the BAD (always fails) and SLOW (a cross join per insert) triggers to ``path``."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN")
    con.execute("CREATE TABLE filler (x INTEGER)")
    con.executemany("INSERT INTO filler VALUES (?)", [(i,) for i in range(filler)])
    con.execute("COMMIT")
    con.execute(
        f"CREATE TRIGGER bad BEFORE INSERT ON ticks WHEN NEW.pair = '{BAD}' "
        "BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
    )
    con.execute(
        f"CREATE TRIGGER slow AFTER INSERT ON ticks WHEN NEW.pair = '{SLOW}' "
        "BEGIN SELECT COUNT(*) FROM filler a, filler b; END"
    )
    con.close()


def stored(path: Path) -> dict[int, tuple[str, str, int, str]]:
    """Every row of the ticks table, by id, read with a fresh connection."""
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, pair, price, ts_ms, sources FROM ticks").fetchall()
    con.close()
    return {r[0]: tuple(r[1:]) for r in rows}


def as_row(tick: Tick) -> tuple[str, str, int, str]:
    return (tick.pair, str(tick.price), tick.ts_ms, ",".join(tick.sources))


class Recorder:
    """A listener that keeps what it was given (and may be told to raise on some ids)."""

    def __init__(self, fail_on: frozenset[int] = frozenset()) -> None:
        self.seen: list[Tick] = []
        self.fail_on = fail_on

    def __call__(self, tick: Tick) -> None:
        self.seen.append(tick)
        if tick.id in self.fail_on:
            raise RuntimeError(f"listener broke on {tick.id}")


async def open_log(path: Path, timeout: float = 5.0) -> tuple[Store, TickLog, Metrics]:
    store = await Store.open(path, timeout=timeout)
    metrics = Metrics(new_registry())
    return store, TickLog(store, metrics, FakeClock(), await store.max_id()), metrics


async def test_append_hands_on_in_order_and_starts_after_stored_ids(tmp_path: Path) -> None:
    """Ticks already stored are not handed on again; new ones are, in id order, once each."""
    path = tmp_path / "f.db"
    async with await Store.open(path) as store:
        await store.insert(draft(ts_ms=1))
    store, log, _ = await open_log(path)
    seen = Recorder()
    log.add_listener(seen)
    ticks = [await log.append(draft(pair, ts_ms=i)) for i, pair in enumerate(["A-B", "C-D"] * 2)]
    await store.close()
    assert [t.id for t in seen.seen] == [2, 3, 4, 5]
    assert seen.seen == ticks
    assert log.last_id == 5


async def test_a_raising_listener_stops_neither_the_others_nor_the_log(tmp_path: Path) -> None:
    """A listener that raises is counted and logged once per period; the rest carry on."""
    store, log, metrics = await open_log(tmp_path / "f.db")
    broken, healthy = Recorder(frozenset({1, 2, 3})), Recorder()
    log.add_listener(broken, name="broken")
    log.add_listener(healthy, name="healthy")
    with capture_logs() as logs:
        for i in range(4):
            await log.append(draft(ts_ms=i))
    await store.close()
    assert [t.id for t in healthy.seen] == [1, 2, 3, 4]
    assert [t.id for t in broken.seen] == [1, 2, 3, 4]
    errors = metrics.registry.get_sample_value(
        "bittrade_feed_tick_listener_errors_total", {"listener": "broken"}
    )
    assert errors == 3
    failed = [e for e in logs if e["event"].startswith("tick listener broken failed")]
    assert len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: listener broke on 1"


async def test_apply_is_idempotent_refuses_conflicts_and_hands_on_in_order(tmp_path: Path) -> None:
    """apply(): new ids reach listeners in order; the same tick again is a no-op; a clash errs."""
    store, log, metrics = await open_log(tmp_path / "f.db")
    seen = Recorder()
    log.add_listener(seen)
    first = Tick(3, "BTC-USD", Decimal("1.5"), 10, ("kraken",))
    second = Tick(7, "ETH-USD", Decimal("2"), 11, ("kraken", "bitstamp"))
    assert await log.apply(first) is True
    assert await log.apply(second) is True
    assert await log.apply(first) is False
    assert await log.apply(second) is False
    with pytest.raises(
        StoreConflict, match=r"tick id 7 is stored as ETH-USD 2 .* arrived as ETH-USD 3"
    ):
        await log.apply(Tick(7, "ETH-USD", Decimal("3"), 11, ("kraken", "bitstamp")))
    with pytest.raises(StoreOutOfOrder):
        await log.apply(Tick(5, "ETH-USD", Decimal("3"), 11, ("kraken",)))
    local = await log.append(draft())
    await store.close()
    assert seen.seen == [first, second, local]
    assert local.id == 8
    # Refused ticks are the caller's problem, not a failing store.
    assert metrics.registry.get_sample_value("bittrade_feed_store_write_errors_total") == 0
    assert store.write_status().ok


async def test_a_write_that_commits_after_its_caller_left_is_handed_on_next(tmp_path: Path) -> None:
    """A cancelled append whose transaction still commits is handed on, in order, by the next."""
    path = tmp_path / "f.db"
    await (await Store.open(path)).close()
    rigged(path, filler=3000)
    store, log, _ = await open_log(path)
    seen = Recorder()
    log.add_listener(seen)
    slow = asyncio.create_task(log.append(draft(SLOW)))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert seen.seen == []  # nothing handed on that the caller did not see commit
    nxt = await log.append(draft(ts_ms=2))
    await store.close()
    assert [(t.id, t.pair) for t in seen.seen] == [(1, SLOW), (2, "BTC-USD")]
    assert nxt.id == 2


async def test_failing_store_is_logged_once_then_summarised_then_recovered(
    tmp_path: Path,
) -> None:
    """While every write fails: one error line, a summary a minute, one line on recovery."""
    path = tmp_path / "f.db"
    await (await Store.open(path)).close()
    rigged(path, filler=1)
    store = await Store.open(path)
    metrics = Metrics(new_registry())
    clock = FakeClock()
    log = TickLog(store, metrics, clock, 0)
    with capture_logs() as logs:
        for _ in range(150):  # 150 ticks over 149 s
            with pytest.raises(StoreError, match="disk is full"):
                await log.append(draft(BAD))
            clock.jump(1)
        await log.append(draft())
    await store.close()
    events = [e["event"] for e in logs]
    assert events == [
        "store failed",
        "store failed: still failing",
        "store failed: still failing",
        "store recovered",
    ]
    assert [e.get("failed") for e in logs] == [None, 60, 60, 150]
    assert metrics.registry.get_sample_value("bittrade_feed_store_write_errors_total") == 150


# -- the property: random interleavings of appends, applies, failures and cancellations ----

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["append", "append", "slow", "bad", "apply_new", "apply_same", "apply_clash"]
        ),
        st.integers(0, 3),  # scheduling: yields before a cancel (0: never cancelled)
        st.booleans(),  # run concurrently with the next op
    ),
    min_size=1,
    max_size=12,
)


async def run_schedule(
    path: Path, ops: list[tuple[str, int, bool]], fail_on: frozenset[int]
) -> None:
    await (await Store.open(path)).close()
    rigged(path, filler=400)
    store, log, _ = await open_log(path, timeout=0.05)
    seen, broken = Recorder(), Recorder(fail_on)
    log.add_listener(broken, name="broken")
    log.add_listener(seen, name="seen")
    returned: list[Tick] = []
    applied: list[Tick] = []

    async def one(kind: str, n: int) -> None:
        if kind in ("append", "slow", "bad"):
            pair = {"append": "BTC-USD", "slow": SLOW, "bad": BAD}[kind]
            returned.append(await log.append(draft(pair, ts_ms=n)))
        elif kind == "apply_new" or not applied:
            ident = log.last_id + 5
            # The payload follows from the id, so two racing applies of one id agree.
            tick = Tick(ident, "ETH-USD", Decimal(ident), ident, ("kraken",))
            if await log.apply(tick):
                applied.append(tick)
        elif kind == "apply_same":
            assert await log.apply(applied[-1]) is False
        else:
            clash = applied[-1]
            with pytest.raises(StoreConflict):
                await log.apply(
                    Tick(clash.id, clash.pair, clash.price + 1, clash.ts_ms, clash.sources)
                )

    async def maybe_cancelled(kind: str, n: int, yields: int) -> None:
        task = asyncio.create_task(one(kind, n))
        if yields:
            for _ in range(yields):
                await asyncio.sleep(0.005)
            task.cancel()
        try:
            await task
        except StoreConflict:
            raise  # only apply_clash may conflict, and it expects it
        except (StoreError, asyncio.CancelledError):
            pass  # a failed or abandoned write: the checks below say what it left behind

    batch: list[asyncio.Task[None]] = []
    for n, (kind, yields, concurrent) in enumerate(ops):
        batch.append(asyncio.create_task(maybe_cancelled(kind, n, yields)))
        if not concurrent:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    # Let any abandoned call finish, then one more write hands on whatever it committed
    # (with a patient deadline: on a loaded machine even a plain commit can take 50 ms).
    store.timeout = 5.0
    for _ in range(100):
        try:
            await log.append(draft(ts_ms=99))
            break
        except StoreError:
            await asyncio.sleep(0.02)
    await store.close()

    rows = stored(path)
    ids = [t.id for t in seen.seen]
    assert ids == sorted(set(ids)), "handed on out of order or twice"
    assert set(ids) == set(rows), "a committed tick was skipped, or an uncommitted one handed on"
    assert all(rows[t.id] == as_row(t) for t in seen.seen)
    assert all(rows[t.id] == as_row(t) for t in returned + applied)
    assert broken.seen == seen.seen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, fail_on=st.frozensets(st.integers(1, 15), max_size=4))
def test_listeners_see_every_committed_tick_once_in_order(
    ops: list[tuple[str, int, bool]], fail_on: frozenset[int]
) -> None:
    """Over random interleavings: strictly increasing ids, each committed tick exactly once."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run_schedule(Path(tmp) / "f.db", ops, fail_on))
