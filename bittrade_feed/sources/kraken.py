"""Kraken public Ticker: ``/0/public/Ticker?pair=XBTUSD``; errors arrive inside a 200."""

from __future__ import annotations

from typing import Any

from bittrade_feed.errors import SourceBadBody, SourceRateLimited, SourceWrongPair
from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

# Kraken says XBT for bitcoin, both in requests and in the result keys it sends back.
_ALIASES = {"BTC": "XBT", "DOGE": "XDG"}
_TRANSIENT = ("EService:Unavailable", "EService:Busy", "EGeneral:Internal error")
_RATE_LIMIT = ("EAPI:Rate limit exceeded", "EGeneral:Temporary lockout", "EService: Throttled")


class Kraken(Source):
    """Kraken spot ticker; the price is the last trade, ``result.<key>.c[0]``."""

    name = "kraken"
    default_base_url = "https://api.kraken.com"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``XBTUSD``."""
        base, quote = split_pair(pair)
        return _ALIASES.get(base, base) + _ALIASES.get(quote, quote)

    def url(self, pair: str) -> str:
        """The Ticker URL for one pair."""
        return f"{self.base_url}/0/public/Ticker?pair={self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``c[0]`` of the single result; ``error`` entries are refused by kind."""
        errors = self.field(body, "error")
        if not isinstance(errors, list):
            raise SourceBadBody(self.name, f"error is {type(errors).__name__}, not a list")
        if errors:
            text = "; ".join(str(e) for e in errors)
            if any(str(e).startswith(_RATE_LIMIT) for e in errors):
                raise SourceRateLimited(self.name, f"error in 200: {text}", None)
            transient = any(str(e).startswith(_TRANSIENT) for e in errors)
            raise SourceBadBody(self.name, f"error in 200: {text}", retryable=transient)
        result = self.field(body, "result")
        if not isinstance(result, dict) or len(result) != 1:
            raise SourceBadBody(self.name, "result must hold exactly one pair")
        # Kraken renames the key (XBTUSD comes back as XXBTZUSD), so match loosely: the
        # base must appear in it and the quote end it ("USD" is also inside "XBTUSDT").
        ((key, ticker),) = result.items()
        base, quote = (_ALIASES.get(c, c) for c in split_pair(pair))
        if base not in key or not key.endswith(quote):
            raise SourceWrongPair(self.name, f"asked for {base}{quote}, got {key}")
        price = self.price(self.field(ticker, "c", 0), "c[0]")
        return Quote(self.name, pair, price, received_at)
