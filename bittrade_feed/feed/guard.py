"""The jump guard: a price far from the last published one waits until it is confirmed.

A median protects against a minority of wrong sources, not a majority (3 of 5 answering
x10 make the x10 price the median). So a new price more than ``jump_guard`` (a fraction)
from the pair's last published price is held, not published, until either

- the next ``jump_confirmations`` cycles each agree with it (within ``max_deviation`` of
  the held price): a wrong source that keeps answering wrong still gets through, so
  the delay only buys time, as MakerDAO's OSM delays every price by an hour; or
- in one cycle more than two thirds of the pair's configured sources, and at least
  three, agree on it: the f < n/3 faulty-node bound of Chainlink's OCR, so a real crash
  seen everywhere is published at once.

A price back within the guard drops the held one (counted as rejected). With no published
price at all (an empty database) there is nothing to guard against; after a restart or a
long stale spell the reference is the last published price, however old: a real move
then costs ``jump_confirmations`` intervals, a wrong majority costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from bittrade_feed.feed.aggregate import within
from bittrade_feed.models import TickDraft, plain


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard says about one cycle's price."""

    publish: bool
    outcomes: tuple[str, ...] = ()
    """Jump outcomes to count this cycle (``metrics.JUMP_OUTCOMES``: held, confirmed, ...)."""
    reason: str = ""
    """Why the price is held (empty when it is published)."""


class JumpGuard:
    """One pair's reference price and the jump it is holding, if any."""

    def __init__(self, reference: Decimal | None) -> None:
        self.reference = reference
        """The last published price; ``None`` before the first one."""
        self.held: Decimal | None = None
        self.agreed = 0
        """Cycles since the held price first appeared that agreed with it."""

    def check(
        self,
        draft: TickDraft,
        configured: int,
        fraction: Decimal,
        confirmations: int,
        max_deviation: Decimal,
    ) -> Verdict:
        """Publish ``draft``, or hold it as a suspected jump, and say why."""
        price, reference, held = draft.price, self.reference, self.held
        if not fraction or reference is None or within(price, reference, fraction):
            self.held, self.agreed = None, 0
            return Verdict(True, ("rejected",) if held is not None and fraction else ())
        agreeing = len(draft.sources)
        if agreeing >= 3 and 3 * agreeing > 2 * configured:
            self.held, self.agreed = None, 0
            return Verdict(True, ("confirmed",))
        if held is not None and within(price, held, max_deviation):
            self.agreed += 1
            if self.agreed >= confirmations:
                self.held, self.agreed = None, 0
                return Verdict(True, ("confirmed",))
            return Verdict(False, (), self._reason(price, reference, confirmations))
        # A new jump (or one to somewhere else than the held price): start counting again.
        outcomes = ("rejected", "held") if held is not None else ("held",)
        self.held, self.agreed = price, 0
        return Verdict(False, outcomes, self._reason(price, reference, confirmations))

    def published(self, price: Decimal) -> None:
        """A price was stored and sent: it is the reference from now on."""
        self.reference = price

    def _reason(self, price: Decimal, reference: Decimal, confirmations: int) -> str:
        with localcontext(prec=28):
            change = float((price - reference) / reference * 100)
        left = confirmations - self.agreed
        return (
            f"price {plain(price)} is {change:+.4g}% from {plain(reference)}; waiting for "
            f"{left} more cycle{'s' if left != 1 else ''} to confirm"
        )
