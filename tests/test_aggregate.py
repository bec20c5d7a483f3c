"""Aggregation: median, outlier rejection, quorum, failover."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.feed.aggregate import canonical, failover, median
from bittrade_feed.models import Quote, Tick, plain
from bittrade_feed.sources.base import price_problem

PAIR = "BTC-USD"
ONE_PCT = Decimal("0.01")


def quotes(*prices: str) -> list[Quote]:
    return [Quote(f"s{i}", PAIR, Decimal(p), 0.0) for i, p in enumerate(prices)]


def test_median_of_odd_count() -> None:
    """Three agreeing quotes publish their middle value and name all three sources."""
    out = median(PAIR, quotes("100", "101", "100.5"), 2, ONE_PCT, 1000)
    assert out.draft is not None
    assert out.draft.price == Decimal("100.5")
    assert out.draft.sources == ("s0", "s1", "s2")
    assert out.draft.ts_ms == 1000


def test_median_of_even_count_is_exact_mean_of_middles() -> None:
    """Two middle quotes are averaged exactly in Decimal, not float."""
    out = median(PAIR, quotes("64123.45", "64123.46"), 2, ONE_PCT, 0)
    assert out.draft is not None
    assert str(out.draft.price) == "64123.455"


def test_outlier_dropped_and_reported() -> None:
    """A quote 5% off the median is dropped; the rest still make quorum."""
    out = median(PAIR, quotes("100", "100.2", "105", "99.9"), 2, ONE_PCT, 0)
    assert out.draft is not None
    assert [q.source for q in out.outliers] == ["s2"]
    assert out.draft.sources == ("s0", "s1", "s3")
    assert out.draft.price == Decimal("100")


def test_zero_like_flash_crash_quote_cannot_move_price() -> None:
    """The bisq#29 case: with (129000, 131000, 1) the tiny quote is dropped, not averaged in."""
    out = median(PAIR, quotes("129000", "131000", "1"), 2, Decimal("0.02"), 0)
    assert out.draft is not None
    assert out.draft.price == Decimal("130000")


def test_quorum_not_met_says_why() -> None:
    """Fewer valid quotes than the quorum publish nothing, with a reason."""
    out = median(PAIR, quotes("100"), 2, ONE_PCT, 0, asked=3)
    assert out.draft is None
    assert out.reason == "quorum not met: 1 of 3 sources answered, 2 needed"


def test_quorum_reason_counts_the_sources_asked_not_the_quorum() -> None:
    """Issue 11 item 2: 7 sources asked, none answered, quorum 2 is "0 of 7 ..., 2 needed"."""
    out = median(PAIR, [], 2, ONE_PCT, 0, asked=7)
    assert out.reason == "quorum not met: 0 of 7 sources answered, 2 needed"


def test_quorum_counted_after_outliers() -> None:
    """Two quotes that disagree by more than the band leave too few in agreement."""
    out = median(PAIR, quotes("100", "120"), 2, ONE_PCT, 0)
    assert out.draft is None
    assert "agree within 1% of the median" in out.reason


def test_failover_takes_first_in_priority_order() -> None:
    """Failover publishes the first quote it is given and names only that source."""
    out = failover(PAIR, quotes("100", "200"), 0)
    assert out.draft is not None
    assert (out.draft.price, out.draft.sources) == (Decimal("100"), ("s0",))


def test_failover_with_nothing() -> None:
    """Failover with no answers publishes nothing, with a reason."""
    out = failover(PAIR, [], 0)
    assert out.draft is None
    assert "no source" in out.reason


def test_canonical_drops_trailing_zeros_only() -> None:
    """Trailing zeros go, but 60000 stays 60000 rather than 6E+4; huge values do not raise."""
    assert str(canonical(Decimal("73380.60000"))) == "73380.6"
    assert str(canonical(Decimal("60000"))) == "60000"
    assert str(canonical(Decimal("60000.000"))) == "60000"
    assert str(canonical(Decimal("6E+4"))) == "60000"
    assert canonical(Decimal("1E+28")) == Decimal("1E+28")  # quantize raised here before


# Any accepted price, as digits and an exponent: 1 to 18 digits, 1e-18 up to 1e15.
accepted = st.builds(
    lambda digits, exp: Decimal(f"{digits}E{exp}"),
    st.integers(1, 10**18 - 1),
    st.integers(-36, -3),
).filter(lambda d: price_problem(d) == "")
magnitudes = st.builds(
    lambda digits, exp: Decimal(f"{digits}E{exp}"),
    st.integers(1, 10**18 - 1),
    st.integers(-30, 12),
).filter(lambda d: Decimal("1e-12") <= d <= Decimal("1e12"))


@settings(max_examples=300)
@given(st.one_of(magnitudes, accepted))
def test_canonical_never_uses_exponents(value: Decimal) -> None:
    """From 1e-12 to 1e12 (and every accepted price) the wire string is plain and exact."""
    text = plain(canonical(value))
    assert "E" not in text and "e" not in text
    assert Decimal(text) == value
    assert Tick(1, PAIR, canonical(value), 0, ("s0",)).to_json()["price"] == text


prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2)


@given(st.lists(prices, min_size=1, max_size=12), st.integers(1, 5))
def test_published_price_within_accepted_range(values: list[Decimal], quorum: int) -> None:
    """Whatever the quotes, a published price lies between the lowest and highest kept quote."""
    qs = [Quote(f"s{i}", PAIR, v, 0.0) for i, v in enumerate(values)]
    out = median(PAIR, qs, quorum, Decimal("0.05"), 0)
    if out.draft is None:
        assert out.reason
        return
    kept = [q.price for q in qs if q.source in out.draft.sources]
    assert len(kept) >= quorum
    assert min(kept) <= out.draft.price <= max(kept)
    for q in out.outliers:
        assert q.source not in out.draft.sources


@given(st.lists(prices, min_size=3, max_size=9))
def test_single_wild_quote_never_moves_price_far(values: list[Decimal]) -> None:
    """Adding one absurd quote to agreeing ones keeps the price within the honest range."""
    base = values[0]
    honest = [base * (1 + Decimal(i) / 1000) for i in range(len(values))]
    qs = [Quote(f"s{i}", PAIR, v, 0.0) for i, v in enumerate([*honest, base * 1000])]
    out = median(PAIR, qs, 2, ONE_PCT, 0)
    assert out.draft is not None
    assert min(honest) <= out.draft.price <= max(honest)


@given(
    st.lists(accepted, min_size=1, max_size=9), st.integers(1, 9), st.sampled_from(["0.01", "1"])
)
def test_any_accepted_quotes_aggregate_without_raising(
    values: list[Decimal], quorum: int, band: str
) -> None:
    """Median (any quorum, even 1) and failover never raise on accepted prices; in range."""
    qs = [Quote(f"s{i}", PAIR, v, 0.0) for i, v in enumerate(values)]
    for out in (median(PAIR, qs, quorum, Decimal(band), 0), failover(PAIR, qs, 0)):
        if out.draft is not None:
            assert min(values) <= out.draft.price <= max(values)
            assert "E" not in plain(out.draft.price)
