"""bittrade-feed: one fetch per interval, every subscriber sees the same price."""

__version__ = "0.1.0"
