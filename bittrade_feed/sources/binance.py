"""Binance 24 h ticker: ``/api/v3/ticker/24hr?symbol=BTCUSDT``; Binance has no USD market."""

from __future__ import annotations

from typing import Any

from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

# "Too many requests" / "Way too many requests; IP banned until ...".
_RATE_LIMITED = -1003


class Binance(Source):
    """Binance spot 24 h ticker; the price is ``lastPrice``, the time ``closeTime`` (ms)."""

    name = "binance"
    default_base_url = "https://api.binance.com"
    # Product rule: Binance serves only the USDT-quoted pairs.
    quote_currencies = frozenset({"USDT"})

    def symbol(self, pair: str) -> str:
        """``BTC-USDT`` -> ``BTCUSDT``."""
        base, quote = split_pair(pair)
        return f"{base}{quote}"

    def url(self, pair: str) -> str:
        """The 24 h ticker URL for one symbol."""
        return f"{self.base_url}/api/v3/ticker/24hr?symbol={self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Require the asked ``symbol`` back; read ``lastPrice`` and ``closeTime``."""
        if isinstance(body, dict) and "code" in body and "symbol" not in body:
            code = body["code"]
            self.body_error(
                f"code {code}: {body.get('msg', '')}", rate_limited=code == _RATE_LIMITED
            )
        self.echoed(self.field(body, "symbol"), self.symbol(pair), "symbol")
        price = self.price(self.field(body, "lastPrice"), "lastPrice")
        exchange_ts = self.epoch(self.field(body, "closeTime"), "closeTime", millis=True)
        return Quote(self.name, pair, price, received_at, exchange_ts)
