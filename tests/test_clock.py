"""Ages and deadlines run on the monotonic clock; only what people read uses wall time.

NTP (or an operator) may step the wall clock by an hour either way; the fake clock steps
it without moving the monotonic one, as the kernel does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp.pytest_plugin import AiohttpClient

from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER
from tests.fakeclock import FakeClock

PAIR = "BTC-USDT"


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_readyz_and_price_age_survive_a_stepped_wall_clock(
    aiohttp_client: AiohttpClient,
    daemon_config: Callable[..., Config],
    clock: FakeClock,
    step: float,
) -> None:
    """Stepped an hour: the age is still the seconds since the price, never negative.

    Before, stepped back an hour, a price 6 s old had an age of -3594 s and /readyz said
    200; stepped forward, a fresh price was an hour old and /readyz said 503.
    """
    config = daemon_config(feed={"stale_after": 5.0})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    await client.app[FETCHER].run_cycle()
    stamped = (await (await client.get("/api/price")).json())["ts"]
    clock.set_time(clock.time() + step)
    fresh = await client.get("/readyz")
    assert fresh.status == 200
    price = await (await client.get("/api/price")).json()
    assert price["age_seconds"] == 0.0
    await clock.advance(4)
    assert (await (await client.get("/api/price")).json())["age_seconds"] == 4.0
    assert (await client.get("/readyz")).status == 200
    await clock.advance(2)
    stale = await client.get("/readyz")
    assert stale.status == 503
    detail = (await stale.json())["checks"][f"price:{PAIR}"]["detail"]
    assert detail == "latest price is 6.0 s old (limit 5 s)"
    after = await (await client.get("/api/price")).json()
    assert (after["age_seconds"], after["ts"]) == (6.0, stamped), "ts stays the stamp"


async def test_stored_price_from_the_future_is_not_negative_at_start_up(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config], clock: FakeClock
) -> None:
    """A restart after the wall clock went back an hour: the stored price is 0 s old, not -3600."""
    config = daemon_config(feed={"stale_after": 5.0})
    first = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    await first.app[FETCHER].run_cycle()
    await first.close()
    clock.set_time(clock.time() - 3600)
    second = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    assert (await (await second.get("/api/price")).json())["age_seconds"] == 0.0
    assert (await second.get("/readyz")).status == 200
    await clock.advance(6)
    assert (await second.get("/readyz")).status == 503
