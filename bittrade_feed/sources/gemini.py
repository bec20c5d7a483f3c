"""Gemini v1 pubticker: ``/v1/pubticker/btcusd``; ``volume`` is keyed by the pair's currencies."""

from __future__ import annotations

from typing import Any

from bittrade_feed.errors import SourceWrongPair
from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source


class Gemini(Source):
    """Gemini ticker; the price is ``last``, the time ``volume.timestamp`` (ms)."""

    name = "gemini"
    default_base_url = "https://api.gemini.com"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``btcusd``."""
        base, quote = split_pair(pair)
        return f"{base}{quote}".lower()

    def url(self, pair: str) -> str:
        """The pubticker URL for one pair."""
        return f"{self.base_url}/v1/pubticker/{self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``last``; the ``volume`` keys tell which market answered."""
        if isinstance(body, dict) and body.get("result") == "error":
            reason = body.get("reason", "?")
            self.body_error(
                f"{reason}: {body.get('message', '')}", rate_limited=reason == "RateLimited"
            )
        price = self.price(self.field(body, "last"), "last")
        # Timestamp first: it also proves ``volume`` is an object.
        exchange_ts = self.epoch(
            self.field(body, "volume", "timestamp"), "volume.timestamp", millis=True
        )
        volume = body["volume"]
        # Gemini echoes no symbol; the volume keys are the only sign of the market.
        if not all(code in volume for code in split_pair(pair)):
            keys = ", ".join(sorted(k for k in volume if k != "timestamp"))
            raise SourceWrongPair(self.name, f"asked for {pair}, volume is in {keys}")
        return Quote(self.name, pair, price, received_at, exchange_ts)
