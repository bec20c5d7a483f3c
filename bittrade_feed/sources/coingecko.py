"""CoinGecko simple price: ``/api/v3/simple/price?ids=bitcoin&vs_currencies=usd``.

CoinGecko refreshes its cache every 60 s, so a quote may be older than an exchange's.
"""

from __future__ import annotations

from typing import Any

from bittrade_feed.errors import SourceBadBody
from bittrade_feed.models import Quote, split_pair
from bittrade_feed.sources.base import Source

# CoinGecko names coins by id, not by ticker; a base missing here is not supported.
_IDS = {
    "BTC": "bitcoin",
    "ETH": "ethereum",
    "LTC": "litecoin",
    "SOL": "solana",
    "XRP": "ripple",
    "DOGE": "dogecoin",
    "ADA": "cardano",
    "BCH": "bitcoin-cash",
    "DOT": "polkadot",
}


class CoinGecko(Source):
    """CoinGecko aggregate price; ``<id>.<quote>`` is a JSON number, with ``last_updated_at``."""

    name = "coingecko"
    default_base_url = "https://api.coingecko.com"
    # vs_currencies has fiat and a few coins, but no stablecoins such as USDT.
    quote_currencies = frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "BTC", "ETH"})
    max_quote_age = 180.0

    def supports(self, pair: str) -> bool:
        """Whether CoinGecko has an id for the base and lists the quote currency."""
        base, _ = split_pair(pair)
        return base in _IDS and super().supports(pair)

    def symbol(self, pair: str) -> str:
        """``BTC-USD`` -> ``bitcoin`` (the coin id; the quote goes in ``vs_currencies``)."""
        base, _ = split_pair(pair)
        if base not in _IDS:
            raise ValueError(f"coingecko has no coin id for {base}")
        return _IDS[base]

    def url(self, pair: str) -> str:
        """The simple-price URL for one pair, asking for the update time too."""
        vs = split_pair(pair)[1].lower()
        return (
            f"{self.base_url}/api/v3/simple/price?ids={self.symbol(pair)}"
            f"&vs_currencies={vs}&include_last_updated_at=true"
        )

    def parse(self, pair: str, body: Any, received_at: float) -> Quote:
        """Read ``<id>.<quote>`` and ``<id>.last_updated_at``; ``{}`` means no price."""
        if isinstance(body, dict) and isinstance(body.get("status"), dict):
            status = body["status"]
            code = status.get("error_code")
            self.body_error(f"{code}: {status.get('error_message', '')}", rate_limited=code == 429)
        coin, vs = self.symbol(pair), split_pair(pair)[1].lower()
        # An unknown id or currency is silently left out of the answer, not reported.
        entry = body.get(coin) if isinstance(body, dict) else None
        if not isinstance(entry, dict) or vs not in entry:
            raise SourceBadBody(self.name, f"coingecko has no price for {coin}/{vs}")
        price = self.price(entry[vs], f"{coin}.{vs}")
        updated = self.field(body, coin, "last_updated_at")
        exchange_ts = self.epoch(updated, f"{coin}.last_updated_at")
        return Quote(self.name, pair, price, received_at, exchange_ts)
