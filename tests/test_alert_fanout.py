"""The single-daemon fan-out: every committed firing reaches the hub once, in id order.

Committers (test firings through the store, as the API and the engine make them) race
with seeded pauses between their commit and their poke, some pokes are dropped, and the
store read is slowed at seeded points; whatever the schedule, the hub is handed exactly
the committed firings, in increasing id, once each.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from bittrade_feed.alerts.fanout import FanOut
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import AlertStore, StoredFiring
from bittrade_feed.errors import StoreError
from bittrade_feed.store.sqlite import Store
from tests.fakeclock import FakeClock

RULE = {"pair": "BTC-USD", "kind": "above", "level": "1"}


class Recorder:
    """Stands in for the hub: records what it is handed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []

    def publish_alert(self, owner: str, firing: StoredFiring) -> None:
        self.got.append((owner, firing.id))


class Slowed(AlertStore):
    """``fired_after`` yielding a seeded number of times before and after the read, and
    failing now and then."""

    def __init__(self, store: Store, rnd: random.Random) -> None:
        super().__init__(store)
        self.rnd = rnd

    async def fired_after(self, after: int, limit: int) -> list[tuple[str, StoredFiring]]:
        for _ in range(self.rnd.randint(0, 3)):
            await asyncio.sleep(0)
        if self.rnd.random() < 0.1:
            raise StoreError("database is locked")
        rows = await super().fired_after(after, limit)
        for _ in range(self.rnd.randint(0, 3)):
            await asyncio.sleep(0)
        return rows


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = await Store.open(tmp_path / "feed.sqlite3")
    yield opened
    await opened.close()


@pytest.mark.parametrize("seed", range(30))
async def test_every_committed_firing_is_published_once_in_id_order(
    store: Store, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    monkeypatch.setattr("bittrade_feed.alerts.fanout.PAGE", rnd.choice([1, 2, 500]))
    alerts = Slowed(store, rnd)
    rules = {}
    for owner in ("alice", "bob"):
        made = await alerts.create(owner, parse_rule(RULE), last_tick_id=0, now_ms=1, max_rules=9)
        rules[owner] = made.id
    before = await alerts.test_fire("alice", rules["alice"], {"test": True}, 1)
    hub = Recorder()
    clock = FakeClock()
    fan_out = FanOut(alerts, hub, clock, after=before.id)  # type: ignore[arg-type]
    task = asyncio.create_task(fan_out.run())
    committed: list[tuple[str, int]] = []

    async def committer() -> None:
        for _ in range(rnd.randint(1, 5)):
            owner = rnd.choice(("alice", "bob"))
            firing = await alerts.test_fire(owner, rules[owner], {"test": True}, 2)
            committed.append((owner, firing.id))
            for _ in range(rnd.randint(0, 4)):
                await asyncio.sleep(0)  # between the commit and its poke
            if rnd.random() < 0.8:  # a poke may be lost: a later one reads it too
                fan_out.poke()

    await asyncio.gather(*(committer() for _ in range(rnd.randint(1, 4))))
    fan_out.poke()
    async with asyncio.timeout(5):
        while fan_out.published < max(i for _, i in committed):
            await clock.advance(1.0)  # past any retry pause after a failed read
            await asyncio.sleep(0)
    task.cancel()
    assert hub.got == sorted(committed, key=lambda c: c[1])  # each once, in id order
    assert before.id not in {i for _, i in hub.got}  # at or below ``after``: not again
