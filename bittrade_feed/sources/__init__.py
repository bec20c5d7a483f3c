"""The exchanges we can ask, by name.

Each module holds one exchange: how it names a pair, its URL, and where the price is
in its answer. ``base.Source`` does the HTTP round trip and the checks they share.
"""

from __future__ import annotations

from bittrade_feed.sources.base import Source
from bittrade_feed.sources.binance import Binance
from bittrade_feed.sources.bitfinex import Bitfinex
from bittrade_feed.sources.bitstamp import Bitstamp
from bittrade_feed.sources.coinbase import Coinbase
from bittrade_feed.sources.coinbase_exchange import CoinbaseExchange
from bittrade_feed.sources.coingecko import CoinGecko
from bittrade_feed.sources.gemini import Gemini
from bittrade_feed.sources.kraken import Kraken
from bittrade_feed.sources.okx import Okx
from bittrade_feed.sources.simulated import Simulated

SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (
        Coinbase,
        CoinbaseExchange,
        Kraken,
        Bitstamp,
        Gemini,
        Bitfinex,
        CoinGecko,
        Okx,
        Binance,
        Simulated,
    )
}
"""Every source class by its config name."""

REAL_SOURCES: tuple[str, ...] = tuple(name for name in SOURCES if name != "simulated")
"""Sources that ask a real exchange: the default for a pair when the config names none."""

__all__ = ["REAL_SOURCES", "SOURCES", "Source"]
