"""The fetch loop against fake exchanges on loopback, with time driven by a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bittrade_feed.config import Config
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import FeedStatus, Tick, TickDraft, format_ts
from bittrade_feed.ops.metrics import Metrics, new_registry
from tests.fakeclock import FakeClock, settle
from tests.fakeexchange import Answer, FakeExchanges, with_price
from tests.fetchharness import Harness, harness

PAIR = "BTC-USDT"
__all__ = ["harness"]


async def test_cycle_publishes_median_of_sources(harness, fx: FakeExchanges) -> None:
    """One cycle asks each source once and publishes the median with both names."""
    h = await harness()
    await h.cycle()
    assert [(str(t.price), t.sources) for t in h.ticks] == [("73365.3", ("bitfinex", "kraken"))]
    assert fx.requests == {"kraken": 1, "bitfinex": 1}
    assert fx.paths["kraken"] == "/kraken/0/public/Ticker?pair=XBTUSDT"
    assert h.sample("bittrade_feed_upstream_requests_total", source="kraken", outcome="ok") == 1
    assert h.sample("bittrade_feed_ticks_total", pair=PAIR) == 1


async def test_timeout_counts_and_other_source_still_serves(harness, fx: FakeExchanges) -> None:
    """A source slower than request_timeout is a timeout; with quorum 1 the other still ticks."""
    h = await harness(aggregation={"quorum": 1}, feed={"request_timeout": 0.2})
    fx.answer("bitfinex", body=with_price("bitfinex", "73350"), delay=2.0)
    await h.cycle()
    assert [t.sources for t in h.ticks] == [("kraken",)]
    assert h.sample("bittrade_feed_upstream_requests_total", source="bitfinex", outcome="timeout")
    health = h.fetcher.health["bitfinex"]
    assert (health.last_error_reason, health.failures) == ("timeout", 1)


async def test_retryable_error_retried_within_interval(harness, fx: FakeExchanges) -> None:
    """A 503 then a good answer costs two requests and still makes the tick."""
    h = await harness(feed={"max_attempts": 3})
    fx.script(
        "kraken",
        Answer(status=503, body={"error": ["EService:Unavailable"]}),
        Answer(body=with_price("kraken", "73380.6")),
    )
    await h.cycle()
    assert len(h.ticks) == 1
    assert fx.requests["kraken"] == 2
    assert h.fetcher.health["kraken"].state == "closed"


async def test_rate_limit_honours_retry_after(harness, fx: FakeExchanges, clock: FakeClock) -> None:
    """A 429 with Retry-After rests the source that long, then it is probed again."""
    h = await harness(aggregation={"quorum": 1}, feed={"max_attempts": 3})
    fx.answer(
        "kraken",
        status=429,
        body={"error": ["EAPI:Rate limit exceeded"]},
        headers={"Retry-After": "120"},
    )
    await h.cycle()
    assert fx.requests["kraken"] == 1, "a 429 is not retried inside the interval"
    assert h.fetcher.health["kraken"].state == "open"
    fx.price("kraken", "73380.6")
    await clock.advance(60)
    await h.cycle()
    assert fx.requests["kraken"] == 1, "still resting before Retry-After has passed"
    await clock.advance(61)
    await h.cycle()
    assert fx.requests["kraken"] == 2
    assert h.fetcher.health["kraken"].state == "closed"


async def test_circuit_breaker_rests_failing_source_with_backoff(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Three failed intervals open the breaker; a failed probe doubles the rest."""
    h = await harness(aggregation={"quorum": 1})
    fx.answer("kraken", status=500, raw=b"oops")
    interval = h.fetcher.config.fetch.interval
    for _ in range(3):
        await h.cycle()
        await clock.advance(interval)
    health = h.fetcher.health["kraken"]
    assert (health.state, fx.requests["kraken"]) == ("open", 3)
    assert h.sample("bittrade_feed_source_circuit_state", source="kraken", state="open") == 1
    await h.cycle()
    assert fx.requests["kraken"] == 3, "resting: not asked"
    await clock.advance(interval)
    await h.cycle()
    assert fx.requests["kraken"] == 4, "probed once the rest is over"
    assert health.state == "open" and health.rests == 2
    await clock.advance(interval)
    await h.cycle()
    assert fx.requests["kraken"] == 4, "second rest is twice as long"
    fx.price("kraken", "73380.6")
    await clock.advance(interval * 3)
    await h.cycle()
    assert health.state == "closed"
    assert h.ticks[-1].sources == ("bitfinex", "kraken")


async def test_geo_block_disables_until_reload(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """A 451 disables the source for good; a config reload gives it another chance."""
    h = await harness(aggregation={"quorum": 1})
    fx.answer("kraken", status=451, body={"code": 0, "msg": "restricted location"})
    await h.cycle()
    assert h.fetcher.health["kraken"].state == "disabled"
    await clock.advance(3600)
    await h.cycle()
    assert fx.requests["kraken"] == 1
    h.fetcher.reconfigure(h.fetcher.config)
    fx.price("kraken", "73380.6")
    await h.cycle()
    assert fx.requests["kraken"] == 2
    assert h.fetcher.health["kraken"].state == "closed"


async def test_bad_bodies_publish_nothing(harness, fx: FakeExchanges) -> None:
    """HTML, garbage and a zero price are each rejected by reason; no price is published."""
    h = await harness()
    fx.answer("kraken", raw=b"<html>520: Web server is returning an unknown error</html>")
    fx.answer("bitfinex", body=with_price("bitfinex", "0"))
    await h.cycle()
    assert h.ticks == []
    assert h.sample("bittrade_feed_upstream_requests_total", source="kraken", outcome="bad_body")
    assert h.sample(
        "bittrade_feed_upstream_requests_total", source="bitfinex", outcome="rejected_price"
    )
    assert h.sample("bittrade_feed_ticks_skipped_total", pair=PAIR, reason="no_quorum") == 1


async def test_outlier_is_dropped_and_counted(harness, fx: FakeExchanges, clock: FakeClock) -> None:
    """With three sources, one 10% away is dropped from the price and counted."""
    h = await harness(("kraken", "bitfinex", "coinbase_exchange"))
    body = with_price("coinbaseexchange", "80000")
    body["time"] = format_ts(round(clock.time() * 1000))
    fx.answer("coinbase_exchange", body=body)
    await h.cycle()
    assert h.ticks[0].sources == ("bitfinex", "kraken")
    assert h.sample("bittrade_feed_outliers_total", source="coinbase_exchange") == 1


async def test_stale_after_no_quorum_then_live_again(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """No quorum for stale_after marks the pair stale once; the next tick makes it live."""
    h = await harness(feed={"stale_after": 3.0})
    assert h.fetcher.pairs[PAIR].status.reason == "no price yet"
    await h.cycle()
    assert [s.state for s in h.statuses] == ["live"]  # the first price ends "no price yet"
    h.statuses.clear()
    fx.answer("kraken", status=500, raw=b"down")
    for _ in range(5):
        await clock.advance(1.0)
        await h.cycle()
    assert [s.state for s in h.statuses] == ["stale"]
    stale = h.statuses[0]
    assert stale.since_ms == h.ticks[0].ts_ms
    assert stale.reason == "quorum not met: 1 of 2 sources answered, 2 needed"
    assert h.sample("bittrade_feed_stale", pair=PAIR) == 1
    fx.price("kraken", "73380.6")
    await clock.advance(30)
    await h.cycle()
    assert [s.state for s in h.statuses] == ["stale", "live"]
    assert h.sample("bittrade_feed_stale", pair=PAIR) == 0


async def test_failover_asks_one_source_when_it_answers(harness, fx: FakeExchanges) -> None:
    """Failover makes one request per interval normally, and falls through on failure."""
    h = await harness(aggregation={"strategy": "failover"})
    await h.cycle()
    assert fx.requests == {"kraken": 1}
    assert h.ticks[-1].sources == ("kraken",)
    fx.answer("kraken", status=404, body={"error": ["EQuery:Unknown asset pair"]})
    await h.cycle()
    assert fx.requests == {"kraken": 2, "bitfinex": 1}
    assert h.ticks[-1].sources == ("bitfinex",)
    assert h.ticks[-1].price == Decimal("73350")


async def test_loop_is_scheduled_on_the_clock_without_drift(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Cycles start at start + k*interval; an overrunning cycle skips slots, never overlaps."""
    h = await harness()
    interval = h.fetcher.config.fetch.interval
    start = clock.monotonic()
    task = asyncio.create_task(h.fetcher.run())
    try:
        await _until(lambda: h.fetcher.cycles == 1 and clock.sleepers == 1)
        for k in range(2, 5):
            await clock.advance(interval)
            await _until(lambda k=k: h.fetcher.cycles == k and clock.sleepers == 1)
        assert clock._sleepers[0][0] == start + 4 * interval
        # The cycle of slot 4 takes 2.5 intervals: slot 5 is skipped (a whole interval
        # late), slot 6 runs at once (late but not by a whole interval), then slot 7 on time.
        h.fetcher.sink = _slow_once(h.fetcher.sink, clock, 2.5 * interval)
        await clock.advance(interval)
        await _until(lambda: h.fetcher.cycles == 6 and clock.sleepers == 1)
        assert clock._sleepers[0][0] == start + 7 * interval
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _slow_once(inner: Any, clock: FakeClock, seconds: float) -> Any:
    calls = []

    async def sink(draft: TickDraft) -> Tick:
        if not calls:
            calls.append(1)
            clock.jump(seconds)
        tick: Tick = await inner(draft)
        return tick

    return sink


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
    await settle()


def _next_wake(clock: FakeClock) -> float:
    """When the earliest task still sleeping on the fake clock wakes."""
    return min(when for when, _, fut in clock._sleepers if not fut.done())


def _with_interval(config: Config, interval: float) -> Config:
    return dataclasses.replace(config, fetch=dataclasses.replace(config.fetch, interval=interval))


async def test_reload_wakes_the_sleeping_loop_onto_the_new_interval(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Shortening the interval from 120 s to 0.5 s takes effect at once, not 120 s later.

    The loop's promise (the progress deadline the watchdog checks) is re-made on the new
    interval too, so the watchdog never judges a 120 s sleep by a 0.5 s window.
    """
    h = await harness(feed={"interval": 120.0})
    start = clock.monotonic()
    task = asyncio.create_task(h.fetcher.run())
    try:
        await _until(lambda: h.fetcher.cycles == 1 and clock.sleepers == 1)
        assert _next_wake(clock) == start + 120
        await clock.advance(10)
        # Slots start + 0.5 ... start + 10 have passed: the next cycle runs at once,
        # without an "overran" warning (nothing overran), then keeps the new phase.
        with capture_logs() as logs:
            h.fetcher.reconfigure(_with_interval(h.fetcher.config, 0.5))
            await _until(lambda: h.fetcher.cycles == 2 and clock.sleepers == 1)
        assert not [e for e in logs if e["event"] == "fetch cycle overran"]
        assert _next_wake(clock) == start + 10.5
        timeout = h.fetcher.config.fetch.request_timeout
        assert h.fetcher.schedule.progress_deadline == clock.monotonic() + 2 * 0.5 + timeout
        for k in range(3, 6):
            await clock.advance(0.5)
            await _until(lambda k=k: h.fetcher.cycles == k and clock.sleepers == 1)
        assert _next_wake(clock) == start + 12.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_reload_that_lengthens_the_interval_replans_the_sleep(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """From 1 s to 60 s: the loop sleeps to the new slot and promises progress by then."""
    h = await harness()
    start = clock.monotonic()
    task = asyncio.create_task(h.fetcher.run())
    try:
        await _until(lambda: h.fetcher.cycles == 1 and clock.sleepers == 1)
        h.fetcher.reconfigure(_with_interval(h.fetcher.config, 60.0))
        await _until(lambda: _next_wake(clock) == start + 60)
        assert h.fetcher.schedule.progress_deadline is not None
        assert h.fetcher.schedule.progress_deadline > start + 60
        await clock.advance(59)
        assert h.fetcher.cycles == 1
        await clock.advance(1)
        await _until(lambda: h.fetcher.cycles == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_a_stepped_wall_clock_does_not_change_staleness(
    harness, fx: FakeExchanges, clock: FakeClock, step: float
) -> None:
    """Wall clock stepped back or forward an hour: ages stay true and stale comes on time."""
    # Intervals of 10 s against stale_after 30 s: the fake time a cycle() spends waiting
    # on loopback requests (0.25 s steps) cannot move a transition to another interval.
    h = await harness(feed={"stale_after": 30.0}, aggregation={"quorum": 2})
    await h.cycle()
    stamped = h.ticks[-1].ts_ms
    clock.set_time(clock.time() + step)  # NTP steps the wall clock; monotonic is untouched
    fx.answer("kraken", status=500, raw=b"down")
    states = []
    for _ in range(4):
        await clock.advance(10.0)
        await h.cycle()
        states.append(h.fetcher.pairs[PAIR].status.state)
    assert states == ["live", "live", "stale", "stale"]
    age = h.fetcher.age(PAIR)
    assert age is not None and 40.0 <= age < 50.0
    # "since" is for people: the wall-clock stamp of the last price, as it was stamped.
    assert h.fetcher.pairs[PAIR].status.since_ms == stamped


async def test_stored_price_age_comes_from_its_wall_age_once_and_is_never_negative(
    daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """A stored price 10 s old is 10 s old; one stamped ahead of our clock is 0 s old."""
    eth = {"pairs": [PAIR, "ETH-USDT"], "sources": {PAIR: ["kraken"], "ETH-USDT": ["kraken"]}}
    config = daemon_config(("kraken",), feed=eth)
    now_ms = round(clock.time() * 1000)
    stored = {
        PAIR: Tick(7, PAIR, Decimal("73000"), now_ms - 10_000, ("kraken",)),
        "ETH-USDT": Tick(8, "ETH-USDT", Decimal("2500"), now_ms + 3_600_000, ("kraken",)),
    }
    async with aiohttp.ClientSession() as session:
        fetcher = Fetcher(
            config, session, clock, Metrics(new_registry()), _no_sink, _ignore, stored
        )
        assert fetcher.age(PAIR) == 10.0
        assert fetcher.age("ETH-USDT") == 0.0
        clock.set_time(clock.time() - 7200)
        await clock.advance(5)
        assert (fetcher.age(PAIR), fetcher.age("ETH-USDT")) == (15.0, 5.0)


async def _no_sink(draft: TickDraft) -> Tick:
    raise AssertionError("no cycle runs in this test")


def _ignore(status: FeedStatus) -> None:
    pass


async def test_pair_removed_while_its_cycle_awaits_the_store(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """A reload that drops a pair while its price is being stored: the cycle ends cleanly.

    The price was accepted before the reload, so it is still stored and handed on; the pair's
    state is gone, so nothing recreates it and no status is published for it.
    """
    both = {"pairs": [PAIR, "ETH-USD"], "sources": {PAIR: ["kraken"], "ETH-USD": ["kraken"]}}
    h = await harness(("kraken",), feed=both)
    inner, storing, release = h.fetcher.sink, asyncio.Event(), asyncio.Event()

    async def gated(draft: TickDraft) -> Tick:
        storing.set()
        await release.wait()
        tick: Tick = await inner(draft)
        return tick

    h.fetcher.sink = gated
    cycle = asyncio.create_task(h.fetcher.run_cycle())
    await asyncio.wait_for(storing.wait(), 5)
    config = h.fetcher.config
    h.fetcher.reconfigure(
        dataclasses.replace(config, fetch=dataclasses.replace(config.fetch, pairs=("ETH-USD",)))
    )
    release.set()
    await asyncio.wait_for(cycle, 5)
    assert [t.pair for t in h.ticks] == [PAIR]
    assert list(h.fetcher.pairs) == ["ETH-USD"]
    assert all(s.pair != PAIR for s in h.statuses)


HOSTILE_KRAKEN: dict[str, dict[str, Any]] = {
    "nested": {"raw": b"[" * 50_000, "headers": {"Content-Type": "application/json"}},
    "error-int": {"body": {"error": 1}},
    "price-1e28": {"body": with_price("kraken", "1E+28")},
    "price-1e1000000": {"body": with_price("kraken", "1E+1000000")},
}


@pytest.mark.parametrize("answer", list(HOSTILE_KRAKEN))
@pytest.mark.parametrize("strategy", ["median", "failover"])
async def test_hostile_answer_costs_one_source_one_cycle(
    harness, fx: FakeExchanges, clock: FakeClock, answer: str, strategy: str
) -> None:
    """An answer that used to escape as a foreign exception is named; the others publish."""
    h = await harness(aggregation={"quorum": 1, "strategy": strategy})
    fx.answer("kraken", **HOSTILE_KRAKEN[answer])
    for _ in range(2):
        await h.cycle()
        await clock.advance(h.fetcher.config.fetch.interval)
    assert [t.sources for t in h.ticks] == [("bitfinex",), ("bitfinex",)]
    reason = h.fetcher.health["kraken"].last_error_reason
    assert reason in ("bad_body", "rejected_price")
    assert h.sample("bittrade_feed_upstream_requests_total", source="kraken", outcome=reason) == 2


@pytest.mark.parametrize("strategy", ["median", "failover"])
async def test_huge_accepted_price_never_raises_in_aggregation(
    harness, fx: FakeExchanges, strategy: str
) -> None:
    """The largest and finest accepted prices aggregate and publish in plain notation."""
    h = await harness(aggregation={"quorum": 1, "strategy": strategy, "jump_guard": 0})
    fx.price("kraken", "999999999999999.999")
    fx.price("bitfinex", "999999999999999.998")
    await h.cycle()
    assert h.ticks[-1].to_json()["price"].startswith("999999999999999.99")
    fx.price("kraken", "0.00000065")
    fx.price("bitfinex", "0.00000065")
    await h.cycle()
    assert [t.to_json()["price"] for t in h.ticks][-1] == "0.00000065"


THREE_PAIRS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


async def three_pairs_on_bitfinex(harness: Callable[..., Awaitable[Harness]]) -> Harness:
    """A fetcher asking only bitfinex for three pairs, publishing with one quote."""
    sources = {p: ["bitfinex"] for p in THREE_PAIRS}
    return await harness(
        ("bitfinex",), aggregation={"quorum": 1}, feed={"pairs": THREE_PAIRS, "sources": sources}
    )


async def test_breaker_counts_failed_intervals_not_pair_requests(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Three pairs on one source: one bad interval is one failure; half-open sends one probe."""
    h = await three_pairs_on_bitfinex(harness)
    interval = h.fetcher.config.fetch.interval
    health = h.fetcher.health["bitfinex"]
    fx.answer("bitfinex", status=500, raw=b"down")
    await h.cycle()
    assert (health.state, health.failures, fx.requests["bitfinex"]) == ("closed", 1, 3)
    for _ in range(2):
        await clock.advance(interval)
        await h.cycle()
    assert (health.state, health.failures, health.rests) == ("open", 3, 1)
    assert fx.requests["bitfinex"] == 9
    await clock.advance(2 * interval)
    await h.cycle()
    assert fx.requests["bitfinex"] == 10, "the half-open state lets exactly one probe through"
    assert (health.state, health.rests) == ("open", 2)
    fx.price("bitfinex", "73350")
    await clock.advance(4 * interval)
    await h.cycle()
    assert fx.requests["bitfinex"] == 11, "one probe again; the other pairs skip this cycle"
    assert health.state == "closed"
    assert len(h.ticks) == 1
    await clock.advance(interval)
    await h.cycle()
    assert fx.requests["bitfinex"] == 14
    assert sorted(t.pair for t in h.ticks[1:]) == sorted(THREE_PAIRS)


async def test_rate_limit_on_every_pair_rests_once(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Three 429s in one interval are one rest, not three doublings of the backoff."""
    h = await three_pairs_on_bitfinex(harness)
    fx.answer("bitfinex", status=429, body={"error": "ERR_RATE_LIMIT"})
    await h.cycle()
    health = h.fetcher.health["bitfinex"]
    assert (health.state, health.rests, health.failures) == ("open", 1, 1)
    assert health.open_until == pytest.approx(clock.monotonic() + h.fetcher.config.fetch.interval)


@pytest.mark.parametrize(
    "retry_after", ["99999999999999999999", "9" * 5000, "Fri, 31 Dec 9999 23:59:59 GMT"]
)
async def test_huge_retry_after_is_capped_at_an_hour(
    harness, fx: FakeExchanges, clock: FakeClock, retry_after: str
) -> None:
    """A Retry-After of centuries rests the source for the 1 h cap, then it is probed again."""
    h = await harness(aggregation={"quorum": 1})
    fx.answer("kraken", status=429, body={"error": []}, headers={"Retry-After": retry_after})
    await h.cycle()
    health = h.fetcher.health["kraken"]
    assert health.state == "open"
    assert health.open_until <= clock.monotonic() + 3600
    assert "rest 3600 s" in (health.last_error_message or "")
    fx.price("kraken", "73380.6")
    await clock.advance(3601)
    await h.cycle()
    assert (fx.requests["kraken"], health.state) == (2, "closed")


async def test_reload_resets_rests(harness, fx: FakeExchanges, clock: FakeClock) -> None:
    """SIGHUP (reconfigure) ends a rest at once, as it ends a geo-block."""
    h = await harness(aggregation={"quorum": 1})
    fx.answer("kraken", status=429, body={"error": []}, headers={"Retry-After": "3600"})
    await h.cycle()
    assert h.fetcher.health["kraken"].state == "open"
    h.fetcher.reconfigure(h.fetcher.config)
    assert h.fetcher.health["kraken"].state == "closed"
    assert h.sample("bittrade_feed_source_circuit_state", source="kraken", state="closed") == 1
    fx.price("kraken", "73380.6")
    await clock.advance(h.fetcher.config.fetch.interval)
    await h.cycle()
    assert fx.requests["kraken"] == 2
    assert h.ticks[-1].sources == ("bitfinex", "kraken")


async def test_following_moves_pairs_on_and_says_stale_by_the_same_rule(harness) -> None:
    """Without fetching: followed prices make a pair live; no price for stale_after, stale."""
    h = await harness(feed={"stale_after": 5.0})
    pair = h.fetcher.config.fetch.pairs[0]
    ms = round(h.clock.time() * 1000)
    h.fetcher.follow(Tick(7, pair, Decimal("100"), ms, ("kraken",)))
    assert [(s.state, s.reason) for s in h.statuses] == [("live", "price updated")]
    assert h.fetcher.age(pair) == 0.0
    assert h.sample("bittrade_feed_last_price", pair=pair) == 100.0
    h.fetcher.follow(Tick(6, pair, Decimal("90"), ms - 1, ("kraken",)))  # older: ignored
    h.fetcher.follow(Tick(8, "NOT-A-PAIR", Decimal("1"), ms, ("kraken",)))  # not ours
    assert h.sample("bittrade_feed_last_price", pair=pair) == 100.0
    await h.clock.advance(4.9)
    h.fetcher.following(3.0, caught_up=False)
    assert len(h.statuses) == 1 and h.fetcher.cycles == 0
    assert h.fetcher.schedule.progress_deadline == h.clock.monotonic() + 3.0
    await h.clock.advance(0.2)
    h.fetcher.following(3.0, caught_up=True)
    assert h.statuses[-1].state == "stale"
    assert "shared log" in h.statuses[-1].reason
    assert h.fetcher.cycles == 1  # being caught up is the first cycle READY=1 waits for
    # The next followed price is live again, and the jump guard's reference moved with it.
    h.fetcher.follow(Tick(9, pair, Decimal("101"), ms + 5200, ("kraken",)))
    assert h.statuses[-1].state == "live"
    assert h.fetcher.guards[pair].reference == Decimal("101")
