"""Quotes in, one price out (or a stated reason why there is none this time).

``median``: the median of the quotes, then drop every quote further than
``max_deviation`` from it, then the median of what is left, published only if at least
``quorum`` quotes survive. Median-centred on purpose: a mean/stdev band lets a zero
through when there are few sources (bisq-pricenode#29). With an even count the median
is the mean of the two middle quotes, computed exactly in ``Decimal``.

``failover``: the first valid quote in priority order wins.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

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


def canonical(price: Decimal) -> Decimal:
    """Drop trailing zeros without ever switching to exponent notation."""
    normal = price.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


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
    centre = statistics.median(q.price for q in quotes)
    kept: list[Quote] = []
    outliers: list[Quote] = []
    for q in quotes:
        (kept if abs(q.price - centre) / centre <= max_deviation else outliers).append(q)
    if len(kept) < quorum:
        return Outcome(
            None,
            tuple(outliers),
            f"quorum not met: {len(kept)} of {quorum} sources agree within "
            f"{float(max_deviation) * 100:g}% of the median",
        )
    price = canonical(statistics.median(q.price for q in kept))
    return Outcome(TickDraft(pair, price, ts_ms, _names(kept)), tuple(outliers))


def failover(pair: str, quotes: Sequence[Quote], ts_ms: int) -> Outcome:
    """The first quote (in the caller's priority order) wins."""
    if not quotes:
        return Outcome(None, reason="no source in the failover list answered")
    first = quotes[0]
    return Outcome(TickDraft(pair, canonical(first.price), ts_ms, (first.source,)))


def _names(quotes: Sequence[Quote]) -> tuple[str, ...]:
    return tuple(sorted(q.source for q in quotes))
