"""``AlertEngine.refresh``: rule changes made elsewhere (another node of a cluster).

In a cluster the API writes rules straight to the shared store, at the creating node's
newest tick, and the leader's engine hears of each change later, from a feed that may
report one twice. These tests make the changes in the store, as another node would, and
hand them to ``refresh`` after a delay while ticks flow and steps commit concurrently.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from bittrade_feed.alerts.rules import Frequency, Kind, Rule, RuleState, evaluate
from bittrade_feed.models import Tick
from tests.test_alert_engine import PAIR, UP, Rig, rig

__all__ = ["rig"]

ABOVE = Rule(PAIR, Kind.ABOVE, level=Decimal(100))
REPEAT = Rule(PAIR, Kind.ABOVE, level=Decimal(100), frequency=Frequency(repeat=True, cooldown_s=1))


async def settle(rig: Rig, head: int) -> None:
    """Until the running engine has evaluated and committed every tick up to ``head``."""
    for _ in range(400):
        if rig.engine.cursor >= head:
            await asyncio.sleep(0.02)  # a step that read the last tick commits it
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the engine's cursor stayed at {rig.engine.cursor} < {head}")


@pytest.mark.parametrize("seed", range(12))
async def test_rules_made_elsewhere_fire_from_their_creation_point(rig: Rig, seed: int) -> None:
    """Each rule fires exactly on the ticks after its creation point, however late (and how
    often) its change is reported; a rule deleted elsewhere is dropped."""
    rng = random.Random(seed)
    assert rig.ticklog is not None
    runner = asyncio.create_task(rig.engine.run())
    created: list[tuple[int, int]] = []  # (rule id, its creation point)
    deleted: list[int] = []

    async def reported(rule_id: int, times: int, delete: bool) -> None:
        # The feed reports a change late, sometimes twice, while ticks flow and commit.
        for _ in range(times):
            await asyncio.sleep(rng.random() * 0.004)
            rig.engine.refresh(rule_id, await rig.alerts.get("local", rule_id))
        if delete:
            await rig.alerts.delete("local", rule_id, version=None)
            rig.engine.refresh(rule_id, await rig.alerts.get("local", rule_id))

    reports = []
    ticks: list[Tick] = []
    try:
        for n in range(40):
            ticks.append(await rig.tick(rng.randint(95, 105)))
            if n % 6 == 2:
                # Made by a node that may be a few ticks behind the leader.
                start = max(0, rig.ticklog.last_id - rng.randint(0, 3))
                made = await rig.alerts.create(
                    "local", UP, last_tick_id=start, now_ms=1, max_rules=99
                )
                delete = n % 18 == 14
                if delete:
                    deleted.append(made.id)
                else:
                    created.append((made.id, start))
                reports.append(asyncio.create_task(reported(made.id, rng.choice([1, 2]), delete)))
            await asyncio.sleep(rng.random() * 0.001)
        await asyncio.gather(*reports)
        await settle(rig, ticks[-1].id)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    loaded = {e.id for e in rig.engine.rules()}
    assert loaded == {rule_id for rule_id, _ in created}
    assert deleted and not loaded & set(deleted)
    for rule_id, start in created:
        state = RuleState(last_tick_id=start)
        expected = [f.tick_id for t in ticks if (f := evaluate(UP, state, t)) is not None]
        got = [f.tick_id for f in await rig.alerts.firings("local", rule_id, 100)]
        assert sorted(got) == expected, (seed, rule_id, start)


async def test_a_replace_made_elsewhere_starts_afresh_and_a_stale_report_is_ignored(
    rig: Rig,
) -> None:
    """A new version is evaluated from its creation point; an old version read late, or
    the same version reported again, changes nothing (the new one keeps firing)."""
    first = await rig.alerts.create("local", ABOVE, last_tick_id=0, now_ms=1, max_rules=9)
    rig.engine.refresh(first.id, first)
    await rig.tick(101)
    await rig.drain()
    replaced = await rig.alerts.replace("local", first.id, REPEAT, version=None, last_tick_id=1)
    rig.engine.refresh(first.id, replaced)
    await rig.tick(102)
    await rig.drain()
    rig.engine.refresh(first.id, await rig.alerts.get("local", first.id))  # the same version
    rig.engine.refresh(first.id, first)  # a stale read: version 1 < 2
    await rig.tick(103)
    await rig.drain()
    got = [f.tick_id for f in await rig.alerts.firings("local", first.id, 10)]
    # Version 1 ("once") fired on tick 1; version 2 ("repeat") on ticks 2 and 3.
    assert sorted(got) == [1, 2, 3]
    (entry,) = rig.engine.rules()
    assert entry.version == 2
