"""``live``/``stale`` on a daemon that does not fetch: the same rule, fed by the shared log.

The leader's fetch loop decides staleness from its own publishes. A follower sees prices
only as they arrive from the log, so it applies the same rule to those: a pair with no new
price for ``feed.stale_after`` is stale, and the next price makes it live again. When Redis
is down nobody can publish, so every daemon goes stale on the same schedule.
"""

from __future__ import annotations

from collections.abc import Callable

from bittrade_feed.clock import Clock
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.ops.metrics import Metrics


class FollowerStatus:
    """Keeps the fetcher's per-pair state true while another daemon fetches."""

    def __init__(
        self,
        fetcher: Fetcher,
        clock: Clock,
        metrics: Metrics,
        on_status: Callable[[FeedStatus], None],
    ) -> None:
        self.fetcher, self.clock, self.metrics, self.on_status = fetcher, clock, metrics, on_status

    def applied(self, tick: Tick, *, leading: bool) -> None:
        """A tick from the log: the pair's last price moves on; a follower says live."""
        state = self.fetcher.pairs.get(tick.pair)
        if state is None:
            return
        state.last_tick_wall = max(state.last_tick_wall, tick.ts_ms / 1000)
        if leading:
            return  # the fetch loop has already done the rest for its own publish
        self.metrics.last_tick.labels(tick.pair).set(tick.ts_ms / 1000)
        self.metrics.last_price.labels(tick.pair).set(float(tick.price))
        if state.status.state == "stale":
            self._set(tick.pair, "live", tick.ts_ms, "price updated")

    def check(self) -> None:
        """Say stale for every pair the log has not refreshed within ``stale_after``."""
        config = self.fetcher.config.fetch
        now = self.clock.time()
        for pair, state in self.fetcher.pairs.items():
            age = now - state.last_tick_wall
            if state.status.state == "live" and age >= config.stale_after:
                reason = f"no new price in the shared log for {age:.0f} s"
                self._set(pair, "stale", round(state.last_tick_wall * 1000), reason)

    def _set(self, pair: str, state: str, since_ms: int, reason: str) -> None:
        status = FeedStatus(pair, state, since_ms, reason)
        self.fetcher.pairs[pair].status = status
        self.metrics.stale.labels(pair).set(1 if state == "stale" else 0)
        self.on_status(status)
