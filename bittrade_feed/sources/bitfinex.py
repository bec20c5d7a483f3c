"""Bitfinex v2 ticker: ``/v2/ticker/tBTCUSD``; a bare array with the last price at ``[6]``."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

from bittrade_feed.errors import SourceBadBody
from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

_ALIASES = {"USDT": "UST"}
_FIELDS = 10
"""BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE, LAST_PRICE, VOLUME,
HIGH, LOW. A funding symbol would answer with 16."""
_LAST_PRICE = 6
_MAINTENANCE = 20060


class Bitfinex(Source):
    """Bitfinex trading-pair ticker; no timestamp and no echo of the symbol."""

    name = "bitfinex"
    default_base_url = "https://api-pub.bitfinex.com"

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``tBTCUSD``; ``BTC-USDT`` -> ``tBTCUST``; long codes get a colon."""
        base, quote = (_ALIASES.get(c, c) for c in split_pair(pair))
        if len(base) > 3 or len(quote) > 3:
            return f"t{base}:{quote}"
        return f"t{base}{quote}"

    def url(self, pair: str) -> str:
        """The ticker URL for one pair."""
        return f"{self.base_url}/v2/ticker/{self.symbol(pair)}"

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``[6]`` of the 10-element array; error arrays and objects are refused."""
        # Over the rate limit the answer is an object, while every normal answer is an array.
        if isinstance(body, Mapping):
            error = body.get("error") or reprlib.repr(body)
            self.body_error(str(error), rate_limited=error == "ERR_RATE_LIMIT")
        if isinstance(body, list) and body[:1] == ["error"]:
            code = body[1] if len(body) > 1 else None
            detail = " ".join(str(part) for part in body[1:])
            self.body_error(detail or "error", retryable=code == _MAINTENANCE)
        if not isinstance(body, list) or len(body) != _FIELDS:
            shape = reprlib.repr(body)
            raise SourceBadBody(self.name, f"expected a list of {_FIELDS} numbers, got {shape}")
        price = self.price(body[_LAST_PRICE], f"[{_LAST_PRICE}]")
        return Quote(self.name, pair, price, received_at)
