"""How an application uses the client, written as a user would; checked by ``mypy --strict``.

Not a test module: mypy reads it to prove the public API is fully typed.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bittrade_feed_client import (
    Alert,
    AlertRule,
    AlertsAPI,
    AuthError,
    FeedClient,
    FeedError,
    ForbiddenError,
    PairStatus,
    RequestRejected,
    ServiceError,
    State,
    StateChange,
    Tick,
    Unauthorized,
    Webhook,
    subscribe,
)


class Trader:
    """Trades only while the feed is live."""

    def __init__(self) -> None:
        self.enabled = False
        self.spent = Decimal(0)

    def on_state(self, change: StateChange) -> None:
        """Disable trading the moment the feed is not live."""
        self.enabled = change.state is State.LIVE

    def on_tick(self, tick: Tick) -> None:
        """Buy a little on every tick while allowed."""
        if self.enabled and tick.ts.tzinfo is not None:
            self.spent += tick.price * Decimal("0.001")


async def trade(url: str) -> Decimal:
    """The async way: ticks, states and the snapshot."""
    trader = Trader()
    feed = FeedClient(url, pairs=["BTC-USD"], token=None, idle_timeout=30.0, max_attempts=None)
    try:
        async with feed:
            async for tick in feed:
                trader.on_tick(tick)
                latest: Tick | None = feed.latest("BTC-USD")
                status: PairStatus | None = feed.status("BTC-USD")
                if latest is not None and status is not None and status.state == "stale":
                    break
    except Unauthorized as exc:
        print(f"check the token: {exc.detail} (HTTP {exc.status})")
    except FeedError as exc:
        print(f"feed ended: {exc}")
    return trader.spent


async def watch(url: str) -> list[State]:
    """Watching the state through the async iterator."""
    seen: list[State] = []
    async with FeedClient(url, on_state=Trader().on_state) as feed:
        async for change in feed.states():
            seen.append(change.state)
            if change.state is State.CLOSED or feed.error is not None:
                break
    return seen


async def fresh_token() -> str:
    """A token source, as an identity provider's client would be."""
    await asyncio.sleep(0)
    return "a.jwt.token"


async def authenticated(url: str, key: str) -> tuple[str, ...]:
    """Credentials: an API key, a token provider, and the two refusals."""
    async with FeedClient(url, api_key=key) as feed:
        async for tick in feed:
            return (tick.pair,)
    try:
        async with FeedClient(url, token_provider=fresh_token) as feed:
            await feed.__anext__()
    except AuthError as exc:
        print(f"log in again: {exc.detail}")
    except ForbiddenError as exc:
        return exc.pairs
    for tick in subscribe(url, api_key=key, token_provider=lambda: key):
        return (tick.pair,)
    return ()


async def alerted(url: str, key: str, saved_alert_id: int | None) -> list[str]:
    """Alerts: a rule made through the API, its firings off the stream, resumed by id."""
    lines: list[str] = []
    async with AlertsAPI(url, api_key=key, timeout=5.0) as api:
        try:
            rule: AlertRule = await api.create_rule(
                {"pair": "BTC-USD", "kind": "crosses_up", "level": "70000", "hysteresis": "50"}
            )
        except RequestRejected as exc:
            return [f"fix {exc.field}: {exc.detail}"]
        except ServiceError as exc:
            return [f"try again in {exc.retry_after or 5:g} s"]
        current = await api.get_rule(rule.id)
        await api.update_rule(rule.id, {**current.definition, "level": "71000"}, etag=current.etag)
        hook: Webhook = await api.create_webhook("https://hooks.example/bittrade")
        secret: str | None = hook.secret
        lines.append(f"verify with {secret is not None}")
        firings: list[Alert] = await api.rule_firings(rule.id, limit=10)
        lines.extend(f.at.isoformat() for f in firings)
    async with FeedClient(url, api_key=key, alerts_after=saved_alert_id) as feed:
        async for alert in feed.alerts():
            price: Decimal | None = alert.price
            pair: str | None = alert.pair
            lines.append(f"{alert.id} {alert.rule_id} {pair} {price} {alert.kind} {alert.detail}")
            saved: int | None = feed.last_alert_id
            if saved is not None and alert.tick_id is None and alert.test:
                break
    return lines


def script(url: str) -> list[str]:
    """The blocking way, for scripts."""
    prices: list[str] = []
    for tick in subscribe(url, pairs=("BTC-USD",), reconnect_delay=1.0, max_attempts=5):
        prices.append(f"{tick.pair} {tick.price:,} {tick.ts:%H:%M:%S} {','.join(tick.sources)}")
        if len(prices) == 3:
            break
    return prices


if __name__ == "__main__":
    asyncio.run(trade("http://localhost:8080"))
