"""Coinbase Exchange product ticker: ``/products/BTC-USD/ticker``; the last trade and its time."""

from __future__ import annotations

from typing import Any

from bittrade_feed.errors import SourceBadBody
from bittrade_feed.models import Quote, parse_ts, split_pair
from bittrade_feed.sources.base import Source


class CoinbaseExchange(Source):
    """Coinbase Exchange (ex-Pro) ticker; the price is ``price``, the trade time ``time``."""

    name = "coinbase_exchange"
    default_base_url = "https://api.exchange.coinbase.com"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``BTC-USD`` (the product id)."""
        base, quote = split_pair(pair)
        return f"{base}-{quote}"

    def url(self, pair: str) -> str:
        """The ticker URL for one product."""
        return f"{self.base_url}/products/{self.symbol(pair)}/ticker"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``price`` and the ISO ``time``; a lone ``message`` is an error."""
        if isinstance(body, dict) and "message" in body and "price" not in body:
            self.body_error(str(body["message"]))
        price = self.price(self.field(body, "price"), "price")
        when = self.field(body, "time")
        try:
            exchange_ts = parse_ts(when) / 1000
        except (TypeError, AttributeError, ValueError):
            raise SourceBadBody(self.name, f"time is {when!r}, not an ISO 8601 time") from None
        return Quote(self.name, pair, price, received_at, exchange_ts)
