"""``live``/``stale`` on a daemon that does not fetch: the same rule, fed by the shared log.

The leader's fetch loop decides staleness from its own publishes. A follower sees prices
only as they arrive from the log, so it applies the same rule to those: a pair with no new
price for ``feed.stale_after`` is stale, and the next price makes it live again. When Redis
is down nobody can publish, so every daemon goes stale on the same schedule. The fetcher's
per-pair state is kept current on every daemon, so a follower that becomes leader goes on
from the right age and jump-guard reference.
"""

from __future__ import annotations

from bittrade_feed.clock import Clock
from bittrade_feed.feed.fetcher import Fetcher
from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.ops.metrics import Metrics


class FollowerStatus:
    """Keeps the fetcher's per-pair state true while another daemon fetches."""

    def __init__(self, fetcher: Fetcher, clock: Clock, metrics: Metrics) -> None:
        self.fetcher, self.clock, self.metrics = fetcher, clock, metrics

    def applied(self, tick: Tick, *, leading: bool) -> None:
        """A tick from the log: the pair's last price moves on; a follower says live."""
        state = self.fetcher.pairs.get(tick.pair)
        if state is None or tick.ts_ms < state.last_ts_ms:
            return
        if leading:
            return  # the fetch loop did all of this for its own publish
        state.last_tick_mono, state.last_ts_ms = self.clock.monotonic(), tick.ts_ms
        guard = self.fetcher.guards.get(tick.pair)
        if guard is not None:
            guard.published(tick.price)
        self.metrics.last_tick.labels(tick.pair).set(tick.ts_ms / 1000)
        self.metrics.last_price.labels(tick.pair).set(float(tick.price))
        if state.status.state != "live":
            self._set(tick.pair, "live", tick.ts_ms, "price updated")

    def check(self) -> None:
        """Say stale for every pair the log has not refreshed within ``stale_after``."""
        stale_after = self.fetcher.config.fetch.stale_after
        for pair, state in list(self.fetcher.pairs.items()):
            age = self.fetcher.age(pair)
            if state.status.state == "live" and age is not None and age >= stale_after:
                reason = f"no new price in the shared log for {age:.0f} s"
                self._set(pair, "stale", state.last_ts_ms, reason)

    def _set(self, pair: str, state: str, since_ms: int, reason: str) -> None:
        status = FeedStatus(pair, state, since_ms, reason)
        self.fetcher.pairs[pair].status = status
        self.metrics.stale.labels(pair).set(1 if state == "stale" else 0)
        self.fetcher.on_status(status)
