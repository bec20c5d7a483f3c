"""Coinbase retail spot price: ``/v2/prices/BTC-USD/spot``; the price is ``data.amount``."""

from __future__ import annotations

from typing import Any

from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

_RATE_LIMIT = "rate_limit_exceeded"


class Coinbase(Source):
    """Coinbase's v2 Data API spot price (no fee, no timestamp)."""

    name = "coinbase"
    default_base_url = "https://api.coinbase.com"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``BTC-USD``."""
        base, quote = split_pair(pair)
        return f"{base}-{quote}"

    def url(self, pair: str) -> str:
        """The spot-price URL for one pair."""
        return f"{self.base_url}/v2/prices/{self.symbol(pair)}/spot"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``data.amount``; ``data.base``/``data.currency``, when sent, must match."""
        if isinstance(body, dict) and "errors" in body:
            errors = body["errors"] if isinstance(body["errors"], list) else [body["errors"]]
            limited = any(
                isinstance(e, dict) and e.get("id") == "rate_limit_exceeded" for e in errors
            )
            self.body_error(
                "; ".join(_describe(e) for e in errors) or "empty errors list",
                rate_limited=limited,
            )
        price = self.price(self.field(body, "data", "amount"), "data.amount")
        data = body["data"]
        # The documented example carries only ``currency``; live answers add ``base``.
        for key, asked in zip(("base", "currency"), split_pair(pair), strict=True):
            if key in data:
                self.echoed(data[key], asked, f"data.{key}")
        return Quote(self.name, pair, price, received_at)


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('id', '?')}: {error.get('message', '')}"
    return str(error)
