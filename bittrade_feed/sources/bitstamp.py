"""Bitstamp v2 ticker: ``/api/v2/ticker/btcusd/``; every value, even the time, is a string."""

from __future__ import annotations

from typing import Any

from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

_ERROR_KEYS = ("response_code", "code", "error")
_DETAIL_KEYS = (*_ERROR_KEYS, "reason", "message", "response_explanation", "errors")
_RATE_LIMITED = "400.002"


class Bitstamp(Source):
    """Bitstamp ticker; the price is ``last``, the time ``timestamp`` (seconds)."""

    name = "bitstamp"
    default_base_url = "https://www.bitstamp.net"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``btcusd``."""
        base, quote = split_pair(pair)
        return f"{base}{quote}".lower()

    def url(self, pair: str) -> str:
        """The ticker URL for one pair (the trailing slash is part of it)."""
        return f"{self.base_url}/api/v2/ticker/{self.symbol(pair)}/"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``last`` and ``timestamp``; error fields are refused.

        Bitstamp echoes no pair, so an answer for another market cannot be detected.
        """
        if isinstance(body, dict) and any(key in body for key in _ERROR_KEYS):
            detail = ", ".join(f"{key} {body[key]}" for key in _DETAIL_KEYS if key in body)
            self.body_error(detail, rate_limited=body.get("response_code") == _RATE_LIMITED)
        price = self.price(self.field(body, "last"), "last")
        exchange_ts = self.epoch(self.field(body, "timestamp"), "timestamp")
        return Quote(self.name, pair, price, received_at, exchange_ts)
