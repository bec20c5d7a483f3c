"""Quotes in, one price out (or a stated reason why there is none this time).

``median``: the median of the quotes, then drop every quote further than
``max_deviation`` from it, then the median of what is left, published only if at least
``quorum`` quotes survive. Median-centred on purpose: a mean/stdev band lets a zero
through when there are few sources (bisq-pricenode#29). With an even count the median
is the mean of the two middle quotes, computed exactly in ``Decimal``.

Nothing here can raise on an accepted quote (``sources.base.price_problem`` bounds them):
the mean runs in a context wide enough to be exact, and ``canonical`` needs no context.

``failover``: the first valid quote in priority order wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from bittrade_feed.models import Quote, TickDraft


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of aggregating one pair's quotes for one interval."""

    draft: TickDraft | None
    """The price to publish, or ``None`` when there is none."""
    outliers: tuple[Quote, ...] = ()
    """Quotes dropped for straying from the median."""
    reason: str = ""
    """Why there is no price (empty when there is one)."""
    held: bool = False
    """The price was held by the jump guard (``feed.guard``), not missing."""


_EXACT_DIGITS = 80
"""Enough precision for the exact mean of two accepted prices (18 digits, 1e-18..1e15)."""


def canonical(price: Decimal) -> Decimal:
    """The same value without trailing decimal zeros and with an exponent of at most 0."""
    sign, digits, exponent = price.as_tuple()
    if not isinstance(exponent, int):
        return price  # NaN or infinity: refused before aggregation, passed through here
    if exponent > 0:
        # 6E+4 -> 60000: built from the digit tuple, so no context can round or overflow.
        return Decimal((sign, digits + (0,) * exponent, 0))
    while exponent < 0 and len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    return Decimal((sign, digits, exponent))


def within(price: Decimal, centre: Decimal, fraction: Decimal) -> bool:
    """Whether ``price`` is at most ``fraction`` (relative) away from ``centre``, exactly."""
    with localcontext(prec=_EXACT_DIGITS):
        return abs(price - centre) <= fraction * centre


def middle(prices: Iterable[Decimal]) -> Decimal:
    """The median; with an even count the exact mean of the two middle values."""
    ordered = sorted(prices)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    with localcontext(prec=_EXACT_DIGITS):
        return (ordered[half - 1] + ordered[half]) / 2


def median(
    pair: str,
    quotes: Sequence[Quote],
    quorum: int,
    max_deviation: Decimal,
    ts_ms: int,
    asked: int | None = None,
) -> Outcome:
    """Median with outlier rejection and a quorum; ``asked``: how many sources were asked."""
    if len(quotes) < quorum:
        of = max(asked or 0, len(quotes))
        return Outcome(
            None, reason=f"quorum not met: {len(quotes)} of {of} sources answered, {quorum} needed"
        )
    centre = middle(q.price for q in quotes)
    kept: list[Quote] = []
    outliers: list[Quote] = []
    for q in quotes:
        (kept if within(q.price, centre, max_deviation) else outliers).append(q)
    if len(kept) < quorum:
        return Outcome(
            None,
            tuple(outliers),
            f"quorum not met: {len(kept)} of {quorum} sources agree within "
            f"{float(max_deviation) * 100:g}% of the median",
        )
    price = canonical(middle(q.price for q in kept))
    return Outcome(TickDraft(pair, price, ts_ms, _names(kept)), tuple(outliers))


def failover(pair: str, quotes: Sequence[Quote], ts_ms: int) -> Outcome:
    """The first quote (in the caller's priority order) wins."""
    if not quotes:
        return Outcome(None, reason="no source in the failover list answered")
    first = quotes[0]
    return Outcome(TickDraft(pair, canonical(first.price), ts_ms, (first.source,)))


def _names(quotes: Sequence[Quote]) -> tuple[str, ...]:
    return tuple(sorted(q.source for q in quotes))
