"""The fetch loop: once per interval, ask the exchanges, aggregate, hand on one price.

One loop per daemon, on the clock: interval k starts at ``start + k * interval`` (no
drift), a cycle never overlaps the next (a late one is followed at once; slots missed by a
whole interval are skipped), and every
request has a timeout, so a cycle always ends. Retryable errors are retried with
tenacity while the interval's budget allows. Each source has a circuit breaker shared
by all pairs (``feed.breaker``); a price far from the last one waits (``feed.guard``).

The slots and the wake-up on reload live in ``feed.schedule``.
Ages are measured on the monotonic clock, so a stepped wall clock changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_random_exponential

from bittrade_feed.clock import Clock
from bittrade_feed.config import Config
from bittrade_feed.errors import (
    SourceError,
    StoreError,
)
from bittrade_feed.feed import aggregate
from bittrade_feed.feed.breaker import SourceHealth
from bittrade_feed.feed.guard import JumpGuard
from bittrade_feed.feed.schedule import Schedule
from bittrade_feed.models import FeedStatus, Quote, Tick, TickDraft, plain
from bittrade_feed.ops.metrics import Metrics
from bittrade_feed.sources import SOURCES, Source

log = structlog.get_logger("bittrade_feed.feed.fetcher")

Sink = Callable[[TickDraft], Awaitable[Tick]]
StatusSink = Callable[[FeedStatus], None]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The config and source objects one cycle runs with."""

    config: Config
    sources: dict[str, Source]


@dataclass(slots=True)
class PairState:
    """What the loop remembers about one pair between intervals."""

    last_tick_mono: float | None
    """When (monotonic) its latest price was accepted here (``None``: no price yet)."""
    status: FeedStatus
    last_ts_ms: int = 0
    """The wall-clock stamp of that price, shown to people as the stale status's ``since``."""


def accepted_at(tick: Tick, clock: Clock) -> float:
    """The monotonic time a stored tick was accepted, from its wall-clock age (never ahead)."""
    return clock.monotonic() - max(0.0, clock.time() - tick.ts_ms / 1000)


class Fetcher:
    """Runs the fetch loop and keeps per-source and per-pair state."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics,
        sink: Sink,
        on_status: StatusSink,
        last_ticks: dict[str, Tick] | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.sink = sink
        self.on_status = on_status
        self.health: dict[str, SourceHealth] = {}
        self.pairs: dict[str, PairState] = {}
        self.cycles = 0
        self.last_cycle_mono: float | None = None
        self.schedule = Schedule(clock, lambda: self.config.fetch)
        self._stored = dict(last_ticks or {})
        """Prices from the database that pairs new to the config start from."""
        self.guards: dict[str, JumpGuard] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config, stored: dict[str, Tick] | None = None) -> None:
        """Take a new config; it applies from the next cycle. Breaker state is kept.

        A pair new to the config starts from its stored price (``stored``, or the
        ``last_ticks`` given at start-up); a pair no longer in it is forgotten.
        """
        self._stored.update(stored or {})
        self.config = config
        self.sources: dict[str, Source] = {}
        for pair in config.fetch.pairs:
            for name in config.sources_for(pair):
                self.sources[name] = build_source(name, config)
        for pair in [p for p in self.pairs if p not in config.fetch.pairs]:
            del self.pairs[pair]
        for pair in config.fetch.pairs:
            if pair not in self.pairs:
                self.pairs[pair] = self._initial_state(pair)
        for name in self.sources:
            # A reload is the operator's way to say "try the rested and geo-blocked ones
            # again" (after a Retry-After of an hour, say), so every breaker starts closed.
            self.health.setdefault(name, SourceHealth(name)).reset()
            self.metrics.set_circuit(name, self.health[name].state)
        self.metrics.declare(config.fetch.pairs, self.sources)
        # Wake a sleeping loop: it must not sleep out an interval that no longer applies.
        self.schedule.changed()

    def _initial_state(self, pair: str) -> PairState:
        tick = self._stored.pop(pair, None)
        # The jump guard's reference is the stored price; with none, there is no guard.
        self.guards[pair] = JumpGuard(tick.price if tick is not None else None)
        if tick is None:
            # Nothing to trade on yet: say so, and "live" arrives with the first price.
            now_ms = round(self.clock.time() * 1000)
            self.metrics.stale.labels(pair).set(1)
            status = FeedStatus(pair, "stale", now_ms, "no price yet")
            return PairState(None, status)
        status = FeedStatus(pair, "live", tick.ts_ms, "latest price from the database")
        return PairState(accepted_at(tick, self.clock), status, tick.ts_ms)

    def age(self, pair: str) -> float | None:
        """Seconds since the pair's latest price was accepted (monotonic), ``None`` if none."""
        state = self.pairs.get(pair)
        if state is None or state.last_tick_mono is None:
            return None
        return max(0.0, self.clock.monotonic() - state.last_tick_mono)

    async def run(self) -> None:
        """Fetch every interval until cancelled (``Schedule`` says when)."""
        slot = self.schedule.start()
        while True:
            await self.run_cycle()
            slot = await self.schedule.next_slot(slot)

    async def run_cycle(self) -> None:
        """Fetch, aggregate and publish every pair once."""
        # One consistent view for the whole cycle: a SIGHUP mid-cycle may swap both.
        plan = _Plan(self.config, self.sources)
        started = self.clock.monotonic()
        deadline = started + plan.config.fetch.interval * 0.9
        await asyncio.gather(
            *(self._cycle_pair(plan, p, deadline) for p in plan.config.fetch.pairs)
        )
        self.cycles += 1
        self.last_cycle_mono = self.clock.monotonic()

    async def _cycle_pair(self, plan: _Plan, pair: str, deadline: float) -> None:
        started = time.perf_counter()
        names = plan.config.sources_for(pair)
        report: dict[str, str] = {}
        agg = plan.config.aggregation
        if agg.strategy == "failover":
            quotes: list[Quote] = []
            for name in names:
                quote = await self._ask(plan, name, pair, deadline, report)
                if quote is not None:
                    quotes.append(quote)
                    break
            outcome = aggregate.failover(pair, quotes, self._now_ms())
        else:
            answers = await asyncio.gather(
                *(self._ask(plan, name, pair, deadline, report) for name in names)
            )
            quotes = [q for q in answers if q is not None]
            outcome = aggregate.median(
                pair, quotes, agg.quorum, agg.max_deviation, self._now_ms(), len(names)
            )
        for q in outcome.outliers:
            self.metrics.outliers.labels(q.source).inc()
            report[q.source] = f"outlier {plain(q.price)}"
        outcome = self._guard(plan, pair, outcome)
        tick, reason = await self._publish(plan, pair, outcome)
        log.info(
            "fetch",
            pair=pair,
            outcome="published" if tick else "skipped",
            price=plain(tick.price) if tick else None,
            id=tick.id if tick else None,
            reason=reason or None,
            sources=report,
            duration_s=round(time.perf_counter() - started, 4),
        )

    def _guard(self, plan: _Plan, pair: str, outcome: aggregate.Outcome) -> aggregate.Outcome:
        """Pass the price on, or hold it as a suspected jump and say so (``feed.guard``)."""
        guard, state = self.guards.get(pair), self.pairs.get(pair)
        if outcome.draft is None or guard is None or state is None:
            return outcome  # no price, or the pair was removed by a reload mid-cycle
        agg = plan.config.aggregation
        verdict = guard.check(
            outcome.draft,
            len(plan.config.sources_for(pair)),
            agg.jump_guard,
            agg.jump_confirmations,
            agg.max_deviation,
        )
        for event in verdict.outcomes:
            self.metrics.jumps.labels(pair, event).inc()
        if verdict.publish:
            return outcome
        if "held" in verdict.outcomes or state.status.state != "suspect":
            self._set_status(pair, "suspect", self._now_ms(), verdict.reason)
        return aggregate.Outcome(None, outcome.outliers, verdict.reason, held=True)

    async def _publish(
        self, plan: _Plan, pair: str, outcome: aggregate.Outcome
    ) -> tuple[Tick | None, str]:
        """Store and hand on the price, or track staleness; returns (tick, why none)."""
        tick: Tick | None = None
        reason = outcome.reason
        if outcome.draft is not None:
            try:
                tick = await self.sink(outcome.draft)
            except StoreError as exc:
                self.metrics.ticks_skipped.labels(pair, "store_error").inc()
                # Not logged here: the tick log reports a failing store once, then summaries.
                reason = f"could not store the price: {exc}"
        else:
            self.metrics.ticks_skipped.labels(
                pair, "jump_held" if outcome.held else "no_quorum"
            ).inc()
        state = self.pairs.get(pair)
        if state is None:  # removed by a reload while this cycle ran
            return tick, reason
        if tick is not None:
            self.metrics.ticks.labels(pair).inc()
            self._accepted(state, tick)
        else:
            self._stale_if_old(pair, state, plan.config.fetch.stale_after, reason)
        return tick, reason

    def _accepted(self, state: PairState, tick: Tick) -> None:
        """The pair's price moved on to ``tick``: age, jump-guard reference, metrics, live."""
        self.guards[tick.pair].published(tick.price)
        state.last_tick_mono, state.last_ts_ms = self.clock.monotonic(), tick.ts_ms
        self.metrics.last_tick.labels(tick.pair).set(tick.ts_ms / 1000)
        self.metrics.last_price.labels(tick.pair).set(float(tick.price))
        if state.status.state != "live":  # stale, or suspect (a held jump)
            self._set_status(tick.pair, "live", tick.ts_ms, "price updated")

    def _stale_if_old(self, pair: str, state: PairState, stale_after: float, reason: str) -> None:
        if state.status.state == "live":
            age = self.age(pair) or 0.0
            if age >= stale_after:
                # "since" is shown to people: the wall time the last price was stamped with.
                self._set_status(pair, "stale", state.last_ts_ms, reason)

    # -- following: in a cluster, while another daemon fetches ------------------

    def follow(self, tick: Tick) -> None:
        """A price another daemon fetched was committed here: the pair moves on with it.

        Keeps the age, the jump guard's reference and the status as if fetched here, so
        ``/readyz`` and stale/live are true on every daemon, and one that starts fetching
        goes on from the right state. An older price than the pair's (or an unknown
        pair: config differs between daemons) changes nothing.
        """
        state = self.pairs.get(tick.pair)
        if state is not None and tick.ts_ms >= state.last_ts_ms:
            self._accepted(state, tick)

    def following(self, within: float, *, caught_up: bool) -> None:
        """One turn of following without fetching: stale pairs, and the watchdog's promise.

        A pair with no new price for ``feed.stale_after`` goes stale, as on the leader.
        The watchdog judges this loop's promise that the next turn comes ``within``
        seconds (a Redis outage is for ``/readyz``, not a reason for systemd to kill every
        daemon); being ``caught_up`` with the log counts as the first cycle READY=1 waits for.
        """
        stale_after = self.config.fetch.stale_after
        for pair, state in list(self.pairs.items()):
            age = self.age(pair)
            why = f"no new price in the shared log for {age or 0:.0f} s"
            self._stale_if_old(pair, state, stale_after, why)
        now = self.clock.monotonic()
        self.schedule.progress_since = now
        self.schedule.progress_deadline = now + within
        if caught_up:
            self.cycles = max(self.cycles, 1)

    def _set_status(self, pair: str, state: str, since_ms: int, reason: str) -> None:
        status = FeedStatus(pair, state, since_ms, reason)
        self.pairs[pair].status = status
        self.metrics.stale.labels(pair).set(1 if state == "stale" else 0)
        level = log.info if state == "live" else log.warning
        level("feed " + state, pair=pair, reason=reason)
        self.on_status(status)

    async def _ask(
        self, plan: _Plan, name: str, pair: str, deadline: float, report: dict[str, str]
    ) -> Quote | None:
        """One source, with retries inside the budget; ``None`` if it gave nothing usable."""
        health = self.health[name]
        # self.cycles only moves after the whole cycle: it names this interval.
        cycle = self.cycles
        if not health.allow(self.clock.monotonic(), cycle):
            probing = health.probing(cycle)
            report[name] = "another pair's probe (half_open)" if probing else "resting"
            report[name] += "" if probing else f" ({health.state})"
            return None
        source = plan.sources[name]
        fetch = plan.config.fetch
        timeout = fetch.request_timeout
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: isinstance(e, SourceError) and e.retryable),
                stop=stop_after_attempt(fetch.max_attempts)
                | _PastDeadline(self.clock, deadline, timeout),
                wait=wait_random_exponential(multiplier=0.25, max=2.0),
                sleep=self.clock.sleep,
                reraise=True,
            ):
                with attempt:
                    quote = await self._request(source, pair, timeout)
        except SourceError as err:
            was = health.state
            health.failed(err, self.clock.monotonic(), self.clock.time(), fetch.interval, cycle)
            report[name] = f"{err.reason}: {err.message}"
            if health.state != was:
                self.metrics.set_circuit(name, health.state)
                _log_breaker(name, health, err)
            return None
        if health.state != "closed":
            log.info("source recovered", source=name)
        health.succeeded(self.clock.time())
        self.metrics.set_circuit(name, "closed")
        self.metrics.source_last_success.labels(name).set(health.last_success or 0)
        report[name] = plain(quote.price)
        return quote

    async def _request(self, source: Source, pair: str, timeout: float) -> Quote:
        started = time.perf_counter()
        try:
            quote = await source.fetch(self.session, pair, timeout, self.clock)
        except SourceError as err:
            self.metrics.upstream_requests.labels(source.name, err.reason).inc()
            raise
        finally:
            self.metrics.upstream_duration.labels(source.name).observe(
                time.perf_counter() - started
            )
        self.metrics.upstream_requests.labels(source.name, "ok").inc()
        return quote

    def _now_ms(self) -> int:
        return round(self.clock.time() * 1000)


def build_source(name: str, config: Config) -> Source:
    """Instantiate a configured source with its overrides."""
    cls = SOURCES[name]
    exchange = config.exchange(name)
    if name == "simulated":
        return cls(exchange.base_url, seed=exchange.seed, volatility=exchange.volatility)  # type: ignore[call-arg]
    return cls(exchange.base_url)


class _PastDeadline(stop_base):
    """Stop retrying when another wait plus a full request would end past the deadline."""

    def __init__(self, clock: Clock, deadline: float, timeout: float) -> None:
        self.clock, self.deadline, self.timeout = clock, deadline, timeout

    def __call__(self, retry_state: RetryCallState) -> bool:
        wait = retry_state.upcoming_sleep or 0.0
        return self.clock.monotonic() + wait + self.timeout > self.deadline


def _log_breaker(name: str, health: SourceHealth, err: SourceError) -> None:
    if health.state == "disabled":
        log.error(
            "source disabled until restart or reload",
            source=name,
            reason=err.reason,
            detail=err.message,
        )
    elif health.state == "open":
        log.warning(
            "source resting",
            source=name,
            reason=err.reason,
            failures=health.failures,
            rests=health.rests,
        )
