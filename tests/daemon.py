"""Fixtures that run the real daemon app against fake exchanges on loopback.

Import the fixtures into a conftest (``from tests.daemon import fx, daemon_config``) to
use them outside ``tests/`` (the client packages' tests do).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.pytest_plugin import AiohttpServer

from bittrade_feed.config import Config, parse_config
from tests.fakeexchange import FakeExchanges

PAIR = "BTC-USDT"
SOURCES = ("kraken", "bitfinex")
"""Exchanges whose recorded answers carry no timestamp, so they never go stale."""


def make_config(
    db: Path, fx: FakeExchanges, sources: tuple[str, ...] = SOURCES, **sections: Any
) -> Config:
    """A config pointing every source at the fake exchanges; ``sections`` override keys."""
    raw: dict[str, Any] = {
        "database": {"path": str(db)},
        "feed": {
            "pairs": [PAIR],
            "interval": 1.0,
            "request_timeout": 0.5,
            "max_attempts": 1,
            "sources": {PAIR: list(sources)},
        },
        "aggregation": {"quorum": min(2, len(sources))},
        "exchanges": {name: {"base_url": fx.url(name)} for name in sources if name != "simulated"},
        "log": {"level": "warning"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return parse_config(raw)


@pytest.fixture
async def fx(aiohttp_server: AiohttpServer) -> FakeExchanges:
    """Fake exchanges serving the recorded Kraken and Bitfinex answers."""
    fake = FakeExchanges()
    server = await aiohttp_server(fake.app())
    fake.base = str(server.make_url("")).rstrip("/")
    fake.price("kraken", "73380.6")
    fake.price("bitfinex", "73350")
    return fake


@pytest.fixture
def daemon_config(tmp_path: Path, fx: FakeExchanges) -> Callable[..., Config]:
    """Build a daemon config for this test's database and fake exchanges."""

    def build(sources: tuple[str, ...] = SOURCES, **sections: Any) -> Config:
        return make_config(tmp_path / "feed.sqlite3", fx, sources, **sections)

    return build
