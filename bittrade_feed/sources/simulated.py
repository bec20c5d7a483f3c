"""FAKE prices: a seeded random walk for offline demos and tests, never a market price.

Asks no exchange. It is never a default source (``REAL_SOURCES`` leaves it out); it runs
only when a config names ``simulated``, and the daemon warns loudly when it does.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import aiohttp

from bittrade_feed.clock import Clock
from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

_STARTS = {"BTC": Decimal(60000), "ETH": Decimal(3000)}
_OTHER_START = Decimal(100)
_CENT = Decimal("0.01")


class Simulated(Source):
    """Fake data: each fetch moves a pair's price by a Gaussian step, to the cent."""

    name = "simulated"
    default_base_url = "simulated://"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        seed: int = 0,
        start: Decimal | None = None,
        volatility: float = 0.0005,
    ) -> None:
        super().__init__(base_url)
        self._rng = random.Random(seed)
        self._start = start
        self._volatility = volatility
        self._prices: dict[str, Decimal] = {}

    def symbol(self, pair: str) -> str:
        """The pair as given."""
        split_pair(pair)
        return pair

    def url(self, pair: str) -> str:
        """A label for logs; nothing is fetched from it."""
        return f"simulated://{self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``price`` from ``{"price": "..."}``, the shape ``fetch`` builds."""
        price = self.price(self.field(body, "price"), "price")
        return Quote(self.name, pair, price, received_at)

    async def fetch(
        self, session: aiohttp.ClientSession, pair: str, timeout: float, clock: Clock
    ) -> Quote:
        """The next step of the pair's walk, stamped with the clock's time."""
        return self.validate(self.parse(pair, {"price": str(self._step(pair))}, clock.time()))

    def _step(self, pair: str) -> Decimal:
        current = self._prices.get(pair)
        if current is None:
            base, _ = split_pair(pair)
            current = self._start if self._start is not None else _STARTS.get(base, _OTHER_START)
        factor = Decimal(repr(1.0 + self._rng.gauss(0.0, self._volatility)))
        # A long run of down steps must not reach zero: validate() would refuse the quote.
        price = max((current * factor).quantize(_CENT), _CENT)
        self._prices[pair] = price
        return price
