"""What subscribers see when the configured pairs change: at start-up and on reload.

A pair that appears gets its stored latest price (``/api/price`` and the stream snapshot
have it at once) and its initial status event. A pair that goes away gets a last status
event saying so; streams left with no configured pair are then closed (``removed``), so
no client waits for ever on a pair nobody fetches. Streams that still have another pair
keep running. REST for a removed pair answers 400 (unknown pair) from then on.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from bittrade_feed.models import FeedStatus, Tick
from bittrade_feed.server.state import CLOCK, FETCHER, HUB, METRICS

log = structlog.get_logger("bittrade_feed.server.pairs")

REMOVED = "removed"
"""The close reason (and metric label) of a stream whose pairs were all removed."""


def apply_pair_changes(
    app: web.Application, before: tuple[str, ...], stored: dict[str, Tick]
) -> None:
    """Announce the pairs the fetcher gained and lost since it served ``before``.

    ``stored`` holds the latest stored price of each gained pair that has one. Call it
    after ``Fetcher.reconfigure``; nothing here awaits, so no tick can slip in between.
    """
    hub, fetcher, metrics = app[HUB], app[FETCHER], app[METRICS]
    now_pairs = fetcher.config.fetch.pairs
    for pair in (p for p in now_pairs if p not in before):
        tick = stored.get(pair)
        known = hub.latest.get(pair)
        if tick is not None and (known is None or known.id < tick.id):
            hub.latest[pair] = tick
        if tick is not None:
            # Gauges start at the stored price, not at 0.
            metrics.last_tick.labels(pair).set(tick.ts_ms / 1000)
            metrics.last_price.labels(pair).set(float(tick.price))
        fetcher.on_status(fetcher.pairs[pair].status)
    removed = [p for p in before if p not in now_pairs]
    if not removed:
        return
    now_ms = round(app[CLOCK].time() * 1000)
    for pair in removed:
        reason = f"pair {pair} removed from the configuration"
        fetcher.on_status(FeedStatus(pair, "stale", now_ms, reason))
    # The last status must be on the wire (not in a coalescing window) before the close.
    hub.flush()
    closed = 0
    for sub in hub.subscribers():
        if not any(p in now_pairs for p in sub.pairs):
            hub.close(sub, REMOVED)
            closed += 1
    log.info("pairs removed", pairs=removed, streams_closed=closed)
