"""Issue 14's benchmark: scenario b's CPU per delivery with alerts off, and on with 10,000 rules.

The goal: alert evaluation adds no measurable CPU per delivery to the broadcast. Rounds
(``bench/ab.py``) alternate a daemon without ``[alerts]`` and one with ``[alerts]`` on and
10,000 rules loaded for the benchmarked pair (BTC-USD), bulk-inserted through the
package's ``AlertStore`` into a database that every "on" daemon starts from (a copy).
The levels are spread around the simulated source's start (60,000, a seeded walk that is
the same in every round), so some rules fire during the run; no webhook endpoint is
configured. Each "on" round also records the daemon's alert metrics (rules loaded,
firings recorded).

``--micro`` (also part of every full run) measures the engine's own evaluation per tick
with the same 10,000 rules, in this process: the rule index (``alerts.index``) against
the plain loop (``evaluate`` on every rule), on the same walk.

    python bench/alerts.py --quick
    python bench/alerts.py --micro
    python bench/alerts.py --out bench/results/issue14/alerts.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import time
import urllib.request
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ab  # bench/ab.py: interleaved rounds of scenario b
import run  # bench/run.py: BENCH, Daemon, log

from bittrade_feed.alerts.index import Entry, PairIndex
from bittrade_feed.alerts.rules import Frequency, Kind, Rule, RuleState, evaluate
from bittrade_feed.alerts.store import AlertStore
from bittrade_feed.models import Tick
from bittrade_feed.store.sqlite import Store

PAIR = "BTC-USD"
CENTER = 60_000
"""The simulated source's BTC-USD start; its walk is seeded, so the same every round."""
SPREAD = 0.10
"""Levels are uniform in CENTER +- 10 %."""
VOLATILITY = 0.0005
"""The simulated source's default step (a Gaussian factor per tick)."""
ALERTS_ON = """
[alerts]
enabled = true
max_rules_per_owner = {n}
"""


def rule_set(n: int, now_ms: int, seed: int = 14) -> list[Rule]:
    """``n`` rules of every kind on PAIR, levels spread around CENTER; the same for a seed.

    As users set them: ``above`` levels over the price and ``below`` under it (a state
    already true would fire at once), edges on both sides; 1 % ``pct_move``; 5 % expire
    within minutes. Repeating rules have cooldowns of a minute or more.
    """
    rng = random.Random(seed)
    made: list[Rule] = []
    for _ in range(n):
        offset = rng.uniform(0, SPREAD)
        sign = rng.choice((-1, 1))
        roll = rng.random()
        repeat = Frequency(repeat=True, cooldown_s=rng.choice([60, 300, 3600]))
        frequency = repeat if rng.random() < 0.5 else Frequency()
        if roll < 0.01:
            pct = Decimal(rng.choice(["0.5", "1", "2", "3"]))
            window = rng.choice([60, 600, 3600])
            rule = Rule(PAIR, Kind.PCT_MOVE, pct=pct, window_s=window, frequency=frequency)
        elif roll < 0.66:
            kind = rng.choice([Kind.CROSSES, Kind.CROSSES_UP, Kind.CROSSES_DOWN])
            level = Decimal(round(CENTER * (1 + sign * offset)))
            band = Decimal(rng.randint(0, 50))
            rule = Rule(PAIR, kind, level=level, hysteresis=band, frequency=frequency)
        else:
            kind = rng.choice([Kind.ABOVE, Kind.BELOW])
            level = Decimal(round(CENTER * (1 + (offset if kind is Kind.ABOVE else -offset))))
            rule = Rule(PAIR, kind, level=level, frequency=frequency)
        expires = now_ms + rng.randint(30, 600) * 1000 if rng.random() < 0.05 else None
        made.append(replace(rule, expires_ms=expires))
    return made


OWNER = "bench-rules"
"""The rules' owner: not ``local`` (every stream's owner with auth off), so the benchmark
measures what evaluation adds to the broadcast, not the fan-out of ``alert`` events to
10,000 streams, which is a delivery of its own."""


async def _insert(path: Path, rules: list[Rule], now_ms: int) -> None:
    store = await Store.open(path)
    try:
        alerts = AlertStore(store)
        for rule in rules:
            await alerts.create(OWNER, rule, last_tick_id=0, now_ms=now_ms, max_rules=len(rules))
    finally:
        await store.close()


def prepare(workdir: Path, n: int) -> Path:
    """A database with ``n`` rules of ``OWNER``, made once per run."""
    path = workdir / "rules.sqlite3"
    started = time.monotonic()
    now_ms = round(time.time() * 1000)
    asyncio.run(_insert(path, rule_set(n, now_ms), now_ms))
    run.log(f"{n} rules inserted in {time.monotonic() - started:.1f} s")
    return path


ALERT_SERIES = re.compile(r"^(bittrade_feed_alert_(?:rules|firings_total|lag_ticks)) (\S+)$", re.M)


def alert_metrics(base: str) -> dict[str, float]:
    """The daemon's rules-loaded, firings and lag series from /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {name: float(value) for name, value in ALERT_SERIES.findall(text)}


def alerts_off(opts: argparse.Namespace, workdir: Path, i: int) -> dict[str, Any]:
    """A round without [alerts]: the broadcast alone."""
    return ab.scenario_b(opts, workdir, f"off{i}")


def alerts_on(opts: argparse.Namespace, workdir: Path, i: int) -> dict[str, Any]:
    """A round with [alerts] on and the prepared rules loaded at start."""
    if opts.database is None:
        opts.database = prepare(workdir, opts.rules)
    extra = ALERTS_ON.format(n=opts.rules)
    with run.Daemon(opts, workdir, 1.0, extra=extra, database=opts.database) as srv:
        before = alert_metrics(srv.base)
        result = run.loadgen(opts, srv, workdir, f"on{i}", opts.n, opts.window, 1.0, opts.settle)
        result["alerts"] = {"at_start": before, "at_end": alert_metrics(srv.base)}
    return result


# -- the micro-benchmark -----------------------------------------------------------------


def walk(ticks: int, seed: int = 0, volatility: float = VOLATILITY) -> list[Tick]:
    """A Gaussian walk from CENTER like the simulated source's, one tick a second."""
    rng, price, t0 = random.Random(seed), Decimal(CENTER), 1_800_000_000_000
    made = []
    for i in range(ticks):
        step = Decimal(repr(1.0 + rng.gauss(0.0, volatility)))
        price = (price * step).quantize(Decimal("0.01"))
        made.append(Tick(i + 1, PAIR, price, t0 + i * 1000, ("simulated",)))
    return made


def micro(
    n: int,
    ticks: int,
    *,
    moves: bool = True,
    volatility: float = VOLATILITY,
    catch_up_every: int = 10,
) -> dict[str, Any]:
    """µs per tick of the index and of the plain loop on the same rules and walk.

    ``moves=False`` leaves the ``pct_move`` rules out (every tick visits all of them);
    ``volatility=0``: the price stands still (no level is ever reached after the first).
    """
    feed = walk(ticks, volatility=volatility)
    rules = [r for r in rule_set(n, feed[0].ts_ms) if moves or r.kind is not Kind.PCT_MOVE]
    index, plain = PairIndex(0), []
    for i, rule in enumerate(rules):
        index.add(Entry(i, "local", rule, RuleState(), 1))
        plain.append(Entry(i, "local", rule, RuleState(), 1))
    warm = 3  # the first ticks arm every edge rule in both: measured apart
    index_s, plain_s, lag_s = [], [], []
    fired = {"index": 0, "plain": 0, "after_warm_up": 0}
    for k, tick in enumerate(feed):
        started = time.perf_counter()
        now = sum(1 for _, f in index.evaluate(tick) if f is not None)
        fired["index"] += now
        fired["after_warm_up"] += now if k >= warm else 0
        middle = time.perf_counter()
        for entry in plain:
            fired["plain"] += evaluate(entry.rule, entry.state, tick) is not None
        ended = time.perf_counter()
        if k >= warm:
            index_s.append(middle - started)
            plain_s.append(ended - middle)
        if k % catch_up_every == 0:  # a catch-up of every rule not visited since the last
            started = time.perf_counter()
            index.catch_up(0)
            lag_s.append(time.perf_counter() - started)
    assert fired["index"] == fired["plain"], fired

    def us(values: list[float]) -> dict[str, float]:
        return {
            "mean": round(statistics.fmean(values) * 1e6, 1),
            "median": round(statistics.median(values) * 1e6, 1),
            "max": round(max(values) * 1e6, 1),
        }

    out = {
        "rules": len(rules),
        "ticks": ticks,
        "firings": fired["index"],
        "firings_after_warm_up": fired["after_warm_up"],
        "index_us_per_tick": us(index_s),
        "plain_us_per_tick": us(plain_s),
        "catch_up_us": us(lag_s),
    }
    out["speedup_mean"] = round(
        out["plain_us_per_tick"]["mean"] / out["index_us_per_tick"]["mean"], 1
    )
    return out


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out = ab.compared(rounds, "off", "on", None)
    series = "bittrade_feed_alert_firings_total"
    ends = ab.figures(rounds, "on", "alerts", "at_end", series)
    starts = ab.figures(rounds, "on", "alerts", "at_start", series)
    # Ready is before the first tick, or just after it: the first tick's firings (every
    # state rule already true) may fall on either side.
    out["on_firings_in_round"] = [
        None if a is None or b is None else b - a for a, b in zip(starts, ends, strict=True)
    ]
    out["on_rules_loaded"] = ab.figures(
        rounds, "on", "alerts", "at_end", "bittrade_feed_alert_rules"
    )
    return out


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rules", type=int, default=10_000, help="rules loaded in the on rounds")
    ap.add_argument("--micro", action="store_true", help="only the in-process micro-benchmark")
    ap.add_argument("--micro-ticks", type=int, default=600, help="ticks of the micro-benchmark")


def main(argv: list[str] | None = None) -> int:
    default = run.BENCH / "results" / "issue14" / "latest.json"
    # The first tick arms every edge rule and the first checkpoint (10 s after start)
    # saves them all: a start-up cost, kept out of the window (in both variants) by a
    # longer settle.
    opts = ab.parse(__doc__, default, argv, options, settle=12.0)
    opts.database = None
    if opts.quick:
        opts.micro_ticks = min(opts.micro_ticks, 60)
    figures = {
        "all_kinds": micro(opts.rules, opts.micro_ticks),
        "without_pct_move": micro(opts.rules, opts.micro_ticks, moves=False),
        "without_pct_move_still_price": micro(
            opts.rules, opts.micro_ticks, moves=False, volatility=0.0
        ),
    }
    run.log(f"micro: {figures}")
    if opts.micro:
        return 0
    variants = [("off", alerts_off), ("on", alerts_on)]
    return ab.interleave(
        opts, variants, summary, "bittrade-alerts-", {"rules": opts.rules}, {"micro": figures}
    )


if __name__ == "__main__":
    raise SystemExit(main())
