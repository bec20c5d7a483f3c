"""OKX v5 market ticker: ``/api/v5/market/ticker?instId=BTC-USDT``; OKX has no USD spot."""

from __future__ import annotations

from typing import Any

from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

_RATE_LIMITED = "50011"
_TRANSIENT = ("50001", "50013")
"""Service temporarily unavailable; system is busy."""


class Okx(Source):
    """OKX spot ticker; the price is ``data[0].last``, the time ``data[0].ts`` (ms)."""

    name = "okx"
    default_base_url = "https://www.okx.com"
    # Product rule: OKX serves only the USDT-quoted pairs.
    quote_currencies = frozenset({"USDT"})

    def symbol(self, pair: str) -> str:
        """``BTC-USDT`` -> ``BTC-USDT`` (the instrument id)."""
        base, quote = split_pair(pair)
        return f"{base}-{quote}"

    def url(self, pair: str) -> str:
        """The ticker URL for one instrument."""
        return f"{self.base_url}/api/v5/market/ticker?instId={self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Require ``code`` "0" and the asked ``instId``; read ``last`` and ``ts``."""
        code = str(self.field(body, "code"))
        if code != "0":
            self.body_error(
                f"code {code}: {body.get('msg', '')}",
                rate_limited=code == _RATE_LIMITED,
                retryable=code in _TRANSIENT,
            )
        self.echoed(self.field(body, "data", 0, "instId"), self.symbol(pair), "data[0].instId")
        price = self.price(self.field(body, "data", 0, "last"), "data[0].last")
        exchange_ts = self.epoch(self.field(body, "data", 0, "ts"), "data[0].ts", millis=True)
        return Quote(self.name, pair, price, received_at, exchange_ts)
