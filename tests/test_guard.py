"""The jump guard: unit cases, the fetch loop against five fake exchanges, and properties."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.feed.aggregate import median, within
from bittrade_feed.feed.guard import JumpGuard
from bittrade_feed.models import Quote, Tick, TickDraft, format_ts
from tests.fakeclock import FakeClock
from tests.fakeexchange import FakeExchanges, with_price
from tests.fetchharness import Harness, harness

PAIR = "BTC-USDT"
GUARD, BAND = Decimal("0.15"), Decimal("0.01")
__all__ = ["harness"]


def draft(price: str, agreeing: int = 3) -> TickDraft:
    return TickDraft(PAIR, Decimal(price), 0, tuple(f"s{i}" for i in range(agreeing)))


def run(guard: JumpGuard, *drafts: TickDraft, configured: int = 5) -> list[tuple[bool, str]]:
    """Feed drafts in turn, publishing what passes; (published?, outcomes) per draft."""
    seen = []
    for d in drafts:
        verdict = guard.check(d, configured, GUARD, 2, BAND)
        if verdict.publish:
            guard.published(d.price)
        seen.append((verdict.publish, ",".join(verdict.outcomes)))
    return seen


def test_no_reference_means_no_guard() -> None:
    """With no published price yet (empty database) the first price is published as is."""
    assert run(JumpGuard(None), draft("64123.45"), draft("64200")) == [(True, ""), (True, "")]


def test_majority_x10_is_held_then_published_after_confirmations() -> None:
    """3 of 5 at x10 is held for two more cycles, then published: it only buys time."""
    guard = JumpGuard(Decimal("64123.45"))
    seen = run(guard, draft("641234.5"), draft("641300"), draft("641250"))
    assert seen == [(False, "held"), (False, ""), (True, "confirmed")]
    assert guard.reference == Decimal("641250")


def test_held_reason_says_how_far_and_how_long() -> None:
    """The suspect reason names the price, the move, the reference and the cycles left."""
    verdict = JumpGuard(Decimal("64123.45")).check(draft("641234.5"), 5, GUARD, 2, BAND)
    assert verdict.reason == (
        "price 641234.5 is +900% from 64123.45; waiting for 2 more cycles to confirm"
    )


def test_price_back_within_guard_rejects_the_held_jump() -> None:
    """A glitch that goes away is never published, and counted as rejected."""
    guard = JumpGuard(Decimal("100"))
    assert run(guard, draft("1000"), draft("101")) == [(False, "held"), (True, "rejected")]


def test_another_jump_restarts_the_count() -> None:
    """A second jump to somewhere else drops the first and waits again from zero."""
    guard = JumpGuard(Decimal("100"))
    seen = run(guard, draft("1000"), draft("50"), draft("50"), draft("50.2"))
    assert seen == [(False, "held"), (False, "rejected,held"), (False, ""), (True, "confirmed")]


def test_super_majority_confirms_a_real_crash_at_once() -> None:
    """4 of 5 sources (more than two thirds, at least three) agreeing publish a crash at once."""
    assert run(JumpGuard(Decimal("100")), draft("60", agreeing=4)) == [(True, "confirmed")]
    assert run(JumpGuard(Decimal("100")), draft("60", agreeing=2), configured=2)[0][0] is False


def test_zero_turns_the_guard_off() -> None:
    """``jump_guard = 0`` publishes every price."""
    verdict = JumpGuard(Decimal("100")).check(draft("1000"), 5, Decimal(0), 2, BAND)
    assert verdict.publish and verdict.outcomes == ()


# The fetch loop, five sources on fake exchanges.

FIVE = ("kraken", "bitfinex", "coinbase_exchange", "bitstamp", "gemini")


def serve(fx: FakeExchanges, clock: FakeClock, name: str, price: str) -> None:
    """Serve ``price`` from ``name``, with its timestamp (if it has one) fresh."""
    body: Any = with_price(name.replace("_", ""), price)
    now = clock.time()
    if name == "coinbase_exchange":
        body["time"] = format_ts(round(now * 1000))
    elif name == "bitstamp":
        body["timestamp"] = str(int(now))
    elif name == "gemini":
        body["volume"]["timestamp"] = str(int(now * 1000))
    fx.answer(name, body=body)


async def next_cycles(h: Harness, clock: FakeClock, count: int) -> None:
    """Run ``count`` cycles, one interval apart."""
    for _ in range(count):
        await clock.advance(1.0)
        await h.cycle()


async def five_publishing(
    harness: Callable[..., Awaitable[Harness]], fx: FakeExchanges, clock: FakeClock, price: str
) -> Harness:
    """A fetcher on all five sources (quorum 3) that has published ``price`` once."""
    h = await harness(FIVE, aggregation={"quorum": 3})
    for name in FIVE:
        serve(fx, clock, name, price)
    await h.cycle()
    return h


def assert_seen(h: Harness, prices: list[str], states: list[str], outcome: str) -> None:
    """The published prices, the status states sent, and one jump counted as ``outcome``."""
    assert [str(t.price) for t in h.ticks] == prices
    assert [s.state for s in h.statuses] == states
    assert h.sample("bittrade_feed_jumps_total", pair=PAIR, outcome=outcome) == 1


async def test_three_of_five_wrong_are_suspect_until_confirmed(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """The issue's case: 3 of 5 at x10 are held (status suspect, counted), not published."""
    h = await five_publishing(harness, fx, clock, "64123.45")
    assert [str(t.price) for t in h.ticks] == ["64123.45"]
    for _ in range(2):
        for name in FIVE[:3]:
            serve(fx, clock, name, "641234.5")
        await next_cycles(h, clock, 1)
    assert len(h.ticks) == 1, "a jump beyond the guard is not published before confirmation"
    assert [s.state for s in h.statuses] == ["live", "suspect"]
    assert h.statuses[-1].reason == (
        "price 641234.5 is +900% from 64123.45; waiting for 2 more cycles to confirm"
    )
    assert h.fetcher.pairs[PAIR].status.state == "suspect"
    assert h.sample("bittrade_feed_jumps_total", pair=PAIR, outcome="held") == 1
    assert h.sample("bittrade_feed_ticks_skipped_total", pair=PAIR, reason="jump_held") == 2
    # The honest sources win again before the jump is confirmed: back to live, rejected.
    for name in FIVE[:3]:
        serve(fx, clock, name, "64130")
    await next_cycles(h, clock, 1)
    assert_seen(h, ["64123.45", "64130"], ["live", "suspect", "live"], "rejected")


async def test_failover_jump_is_confirmed_by_the_next_cycles(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """Failover's x10 first source waits two more cycles; a lasting move then gets through."""
    h = await harness(aggregation={"strategy": "failover"})
    await h.cycle()
    fx.price("kraken", "733806")
    await next_cycles(h, clock, 3)
    assert_seen(h, ["73380.6", "733806"], ["live", "suspect", "live"], "confirmed")


async def test_real_crash_everywhere_is_published_at_once(
    harness, fx: FakeExchanges, clock: FakeClock
) -> None:
    """All five sources at -40% in one cycle is a super-majority: no delay, no suspect."""
    h = await five_publishing(harness, fx, clock, "64123.45")
    for name in FIVE:
        serve(fx, clock, name, "38474.07")
    await next_cycles(h, clock, 1)
    assert_seen(h, ["64123.45", "38474.07"], ["live"], "confirmed")


async def test_guard_reference_after_restart_is_the_stored_price(
    harness, fx: FakeExchanges
) -> None:
    """After a restart the stored latest price is the reference: a x10 first answer waits."""
    h = await harness(last_ticks={PAIR: Tick(7, PAIR, Decimal("7338.06"), 0, ("kraken",))})
    await h.cycle()
    assert h.ticks == []
    assert h.fetcher.pairs[PAIR].status.state == "suspect"


# Properties: the whole pipeline, median then guard, over any sequence of cycles.

LEVELS = st.sampled_from(["100", "100.4", "101", "130", "1000", "1003", "40"]).map(Decimal)
CYCLE = st.lists(st.none() | LEVELS, min_size=5, max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    st.none() | LEVELS,
    st.lists(CYCLE, min_size=1, max_size=12),
    st.integers(1, 5),
    st.integers(1, 3),
)
def test_published_is_in_range_and_no_jump_before_confirmation(
    last: Decimal | None, cycles: list[list[Decimal | None]], quorum: int, confirmations: int
) -> None:
    """For any quotes and last price: in range of the kept quotes, and a jump waits."""
    guard = JumpGuard(last)
    pending: list[Decimal] = []  # held drafts since the last publish
    for prices in cycles:
        quotes = [Quote(f"s{i}", PAIR, p, 0.0) for i, p in enumerate(prices) if p is not None]
        out = median(PAIR, quotes, quorum, BAND, 0)
        if out.draft is None:
            continue
        verdict = guard.check(out.draft, 5, GUARD, confirmations, BAND)
        price, reference = out.draft.price, guard.reference
        if not verdict.publish:
            pending.append(price)
            continue
        kept = [q.price for q in quotes if q.source in out.draft.sources]
        assert min(kept) <= price <= max(kept)
        jump = reference is not None and not within(price, reference, GUARD)
        super_majority = len(out.draft.sources) >= 4
        if jump and not super_majority:
            confirmed = any(
                sum(within(p, held, BAND) for p in [*pending[i + 1 :], price]) >= confirmations
                for i, held in enumerate(pending)
            )
            assert confirmed, f"jump {price} from {reference} published unconfirmed"
        guard.published(price)
        pending.clear()
