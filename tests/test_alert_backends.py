"""The alert data's behaviour, the same on both backends (SQLite on one daemon, Redis in a
cluster): quotas, If-Match, cascades, one firing per (rule, tick), paging, owners,
endpoints, failed deliveries and the outbox worker's reads and writes."""

from __future__ import annotations

import pytest

from bittrade_feed.alerts.backend import DISABLED_ERROR, Retry
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import QuotaExceeded, VersionMismatch
from tests.alertbackends import Backend, backend, change, pending_ids

__all__ = ["backend"]

NEVER = 10**15
"""A ``now_ms`` after every row's due time."""


async def test_the_rule_quota_is_per_owner(backend: Backend) -> None:
    for _ in range(3):
        await backend.rule("alice", max_rules=3)
    with pytest.raises(QuotaExceeded) as refused:
        await backend.rule("alice", max_rules=3)
    assert refused.value.limit == 3
    await backend.rule("bob", max_rules=3)
    assert len(await backend.rules.owned("alice")) == 3
    assert [r.owner for r in await backend.rules.all()] == ["alice"] * 3 + ["bob"]


async def test_replace_and_delete_honour_the_version_and_the_owner(backend: Backend) -> None:
    stored = await backend.rule("alice")
    below = parse_rule({"pair": "BTC-USD", "kind": "below", "level": "5"})
    with pytest.raises(VersionMismatch) as stale:
        await backend.rules.replace("alice", stored.id, below, version=7, last_tick_id=3)
    assert stale.value.current == 1
    with pytest.raises(VersionMismatch) as foreign:
        await backend.rules.replace("bob", stored.id, below, version=None, last_tick_id=3)
    assert foreign.value.current is None
    replaced = await backend.rules.replace("alice", stored.id, below, version=1, last_tick_id=3)
    assert (replaced.version, replaced.created_ms, replaced.state.last_tick_id) == (2, 1_000, 3)
    got = await backend.rules.get("alice", stored.id)
    assert got is not None and got.rule == below and got.version == 2 and got.etag == replaced.etag
    assert await backend.rules.get("bob", stored.id) is None
    with pytest.raises(VersionMismatch):
        await backend.rules.delete("alice", stored.id, version=1)
    with pytest.raises(VersionMismatch):
        await backend.rules.delete("bob", stored.id, version=None)
    await backend.rules.delete("alice", stored.id, version=2)
    assert await backend.rules.get("alice", stored.id) is None
    with pytest.raises(VersionMismatch) as gone:
        await backend.rules.delete("alice", stored.id, version=None)
    assert gone.value.current is None


async def test_a_rule_round_trips_with_expiry_and_state(backend: Backend) -> None:
    body = {"pair": "BTC-USD", "kind": "crosses", "level": "70000", "hysteresis": "5"}
    rule = parse_rule({**body, "expires": "2030-01-01T00:00:00Z"})
    stored = await backend.rules.create("alice", rule, last_tick_id=9, now_ms=2, max_rules=5)
    (got,) = await backend.rules.owned("alice")
    assert got == stored
    await backend.rules.commit([change(stored, 12, fired=False)])
    again = await backend.rules.get("alice", stored.id)
    assert again is not None and again.state.last_tick_id == 12 and again.rule == rule


async def test_a_firing_is_recorded_once_per_rule_and_tick(backend: Backend) -> None:
    hook = await backend.endpoint()
    stored = await backend.rule("alice", hook)
    (first,) = await backend.rules.commit([change(stored, 5)])
    assert (first.rule_id, first.tick_id, first.payload["tick_id"]) == (stored.id, 5, 5)
    # The same change again (a commit retried after a lost reply, or a replay): nothing new.
    assert await backend.rules.commit([change(stored, 5)]) == []
    assert [f.id for f in await backend.rules.firings("alice", stored.id, 10)] == [first.id]
    assert pending_ids(await backend.rules.outbox()) == [f"alert_{first.id}_webhook_{hook.id}"]
    # Two firings of one rule in one commit, one of them a repeat: only the new one.
    fired = await backend.rules.commit([change(stored, 5), change(stored, 6)])
    assert [f.tick_id for f in fired] == [6]


async def test_a_change_of_an_edited_rule_is_skipped(backend: Backend) -> None:
    stored = await backend.rule("alice")
    above = parse_rule({"pair": "BTC-USD", "kind": "above", "level": "3"})
    await backend.rules.replace("alice", stored.id, above, version=None, last_tick_id=0)
    assert await backend.rules.commit([change(stored, 5)]) == []  # evaluated under version 1
    assert await backend.rules.firings("alice", stored.id, 10) == []


async def test_firings_page_oldest_first_per_owner(backend: Backend) -> None:
    a1, a2, b = await backend.rule("alice"), await backend.rule("alice"), await backend.rule("bob")
    assert await backend.rules.latest_firing_id() == 0
    made = []
    for tick in range(1, 6):
        made += await backend.rules.commit([change(a1, tick), change(b, tick), change(a2, tick)])
    mine = [f.id for f in made if f.rule_id != b.id]
    page1 = await backend.rules.firings_after("alice", 0, 4)
    page2 = await backend.rules.firings_after("alice", page1[-1].id, 4)
    page3 = await backend.rules.firings_after("alice", page2[-1].id, 4)
    assert [f.id for f in page1 + page2 + page3] == mine
    assert len(page3) == 2
    assert all(f.rule_id == b.id for f in await backend.rules.firings_after("bob", 0, 100))
    newest = await backend.rules.firings("alice", a1.id, 2)
    assert [f.tick_id for f in newest] == [5, 4]
    assert await backend.rules.firings("bob", a1.id, 10) == []
    test = await backend.rules.test_fire("alice", a1.id, {"test": True}, 9_000)
    assert (test.tick_id, test.payload) == (None, {"test": True})
    assert (await backend.rules.firings_after("alice", mine[-1], 10)) == [test]
    assert await backend.rules.latest_firing_id() == test.id  # of any owner
    with pytest.raises(VersionMismatch):
        await backend.rules.test_fire("bob", a1.id, {"test": True}, 9_000)


async def test_deleting_a_rule_takes_its_firings_and_rows(backend: Backend) -> None:
    hook = await backend.endpoint()
    stored, kept = await backend.rule("alice", hook), await backend.rule("alice", hook)
    await backend.rules.commit([change(stored, 1), change(stored, 2), change(kept, 2)])
    (due, *_) = await backend.outbox.due(NEVER, 10)
    await backend.outbox.finish(due.id, "failed", "boom")
    await backend.rules.delete("alice", stored.id, version=None)
    left = await backend.rules.firings_after("alice", 0, 100)
    assert [f.rule_id for f in left] == [kept.id]
    assert [r[1] for r in await backend.rules.outbox()] == [left[0].id]
    assert await backend.deliveries.failed("alice", 10) == []
    assert [d.id for d in await backend.outbox.due(NEVER, 10)] == [
        r[0] for r in await backend.rules.outbox()
    ]


async def test_endpoints_quota_rotate_and_delete(backend: Backend) -> None:
    e1 = await backend.endpoints.create("alice", "https://1.example.com/", now_ms=5, limit=2)
    e2 = await backend.endpoints.create(
        "alice", "https://2.example.com/", now_ms=6, limit=2, body_format="alertmanager"
    )
    assert (e1.format, e2.format) == ("standard", "alertmanager")
    with pytest.raises(QuotaExceeded):
        await backend.endpoints.create("alice", "https://3.example.com/", now_ms=7, limit=2)
    assert [e.id for e in await backend.endpoints.owned("alice")] == [e1.id, e2.id]
    assert await backend.endpoints.get("alice", e1.id) == e1
    assert await backend.endpoints.get("alice", e2.id) == e2  # the format is kept
    assert await backend.endpoints.get("bob", e1.id) is None
    assert await backend.endpoints.rotate("bob", e1.id, now_ms=10, overlap_ms=100) is None
    rotated = await backend.endpoints.rotate("alice", e1.id, now_ms=10, overlap_ms=100)
    assert rotated is not None and rotated.old_secret == e1.secret != rotated.secret
    assert rotated.signing_keys(50) == [rotated.secret, e1.secret]
    assert rotated.signing_keys(110) == [rotated.secret]
    assert await backend.endpoints.get("alice", e1.id) == rotated
    stored = await backend.rule("alice", e1, e2)
    (firing,) = await backend.rules.commit([change(stored, 1)])
    due = {d.id: d.endpoint for d in await backend.outbox.due(2**62, 10)}
    assert due[f"alert_{firing.id}_webhook_{e2.id}"] == e2  # the worker sees its format
    assert not await backend.endpoints.delete("bob", e1.id)
    assert await backend.endpoints.delete("alice", e1.id)
    assert await backend.endpoints.get("alice", e1.id) is None
    # Its pending row went with it; the other endpoint's stays.
    assert pending_ids(await backend.rules.outbox()) == [f"alert_{firing.id}_webhook_{e2.id}"]
    # A rule naming a deleted endpoint skips it.
    (later,) = await backend.rules.commit([change(stored, 2)])
    assert f"alert_{later.id}_webhook_{e1.id}" not in pending_ids(await backend.rules.outbox())


async def test_a_410_disables_the_endpoint_and_nothing_more_is_queued(backend: Backend) -> None:
    hook = await backend.endpoint()
    stored = await backend.rule("alice", hook)
    await backend.rules.commit([change(stored, 1)])
    (due,) = await backend.outbox.due(NEVER, 10)
    await backend.outbox.disable(due.id, hook.id, 77)
    got = await backend.endpoints.get("alice", hook.id)
    assert got is not None and got.disabled_ms == 77
    (failed,) = await backend.deliveries.failed("alice", 10)
    assert (failed.id, failed.attempts, failed.last_error) == (due.id, 1, DISABLED_ERROR)
    assert await backend.rules.commit([change(stored, 2)]) != []
    assert await backend.rules.outbox() == []
    assert await backend.deliveries.retry("alice", due.id, 100) is Retry.ENDPOINT_GONE


async def test_failed_deliveries_are_listed_and_retried_once(backend: Backend) -> None:
    h1, h2 = await backend.endpoint(), await backend.endpoint(url="https://b.example.com/")
    stored = await backend.rule("alice", h1, h2)
    for tick in (1, 2):
        await backend.rules.commit([change(stored, tick)])
    for row in await backend.outbox.due(NEVER, 10):
        await backend.outbox.finish(row.id, "failed", f"gave up on {row.id}")
    failed = await backend.deliveries.failed("alice", 3)
    firings = sorted({f.firing_id for f in failed}, reverse=True)
    assert [(f.firing_id, f.id) for f in failed] == sorted(
        ((f.firing_id, f.id) for f in failed), key=lambda p: (-p[0], p[1])
    )
    assert len(failed) == 3 and firings[0] > firings[-1]
    assert failed[0].last_error == f"gave up on {failed[0].id}" and failed[0].attempts == 1
    assert await backend.deliveries.failed("bob", 10) == []
    target = failed[0].id
    assert await backend.deliveries.retry("bob", target, 50) is Retry.NOT_FOUND
    assert await backend.deliveries.retry("alice", "alert_999_webhook_x", 50) is Retry.NOT_FOUND
    assert await backend.deliveries.retry("alice", target, 50) is Retry.QUEUED
    assert await backend.deliveries.retry("alice", target, 50) is Retry.NOT_FAILED
    (due,) = await backend.outbox.due(50, 10)
    assert (due.id, due.attempts) == (target, 0)
    assert target not in [f.id for f in await backend.deliveries.failed("alice", 10)]
    await backend.outbox.finish(due.id, "delivered", None)
    assert await backend.deliveries.retry("alice", target, 60) is Retry.NOT_FAILED
    assert await backend.endpoints.delete("alice", failed[1].endpoint_id)
    assert await backend.deliveries.retry("alice", failed[1].id, 60) is Retry.ENDPOINT_GONE


async def test_the_outbox_serves_due_rows_in_order_and_records_attempts(backend: Backend) -> None:
    hooks = [await backend.endpoint(url=f"https://{i}.example.com/") for i in range(3)]
    stored = await backend.rule("alice", *hooks)
    (firing,) = await backend.rules.commit([change(stored, 1, at_ms=1_000)])
    rows = await backend.outbox.due(1_000, 10)
    assert [r.id for r in rows] == sorted(f"alert_{firing.id}_webhook_{h.id}" for h in hooks)
    assert rows[0].fired_ms == 1_000 and rows[0].payload == firing.payload
    assert {r.endpoint.id for r in rows if r.endpoint is not None} == {h.id for h in hooks}
    assert await backend.outbox.due(999, 10) == []
    assert await backend.outbox.depth() == 3
    assert await backend.outbox.nearest_due_ms() == 1_000
    first, second, third = rows
    await backend.outbox.reschedule(first.id, 3_000, "HTTP 500")
    await backend.outbox.reschedule(second.id, 2_000, "HTTP 502")
    await backend.outbox.finish(third.id, "delivered", None)
    assert await backend.outbox.depth() == 2
    assert await backend.outbox.nearest_due_ms() == 2_000
    assert [r.id for r in await backend.outbox.due(2_500, 10)] == [second.id]
    again = await backend.outbox.due(NEVER, 10)
    assert [(r.id, r.attempts) for r in again] == [(second.id, 1), (first.id, 1)]
    assert [r.id for r in await backend.outbox.due(NEVER, 1)] == [second.id]
    # A finished row takes no later outcome: a stale worker cannot undo it.
    await backend.outbox.reschedule(third.id, 9_000, "late")
    await backend.outbox.finish(third.id, "failed", "late")
    assert await backend.deliveries.failed("alice", 10) == []
    await backend.outbox.finish(first.id, "failed", None)
    await backend.outbox.finish(second.id, "failed", "x")
    assert await backend.outbox.depth() == 0 and await backend.outbox.nearest_due_ms() is None
    listed = {f.id: f for f in await backend.deliveries.failed("alice", 10)}
    assert (listed[first.id].attempts, listed[first.id].last_error) == (2, None)


async def test_a_row_whose_endpoint_went_is_due_without_it(backend: Backend) -> None:
    hook = await backend.endpoint()
    stored = await backend.rule("alice", hook)
    await backend.rules.commit([change(stored, 1)])
    (due,) = await backend.outbox.due(NEVER, 10)
    assert due.endpoint == hook
    rotated = await backend.endpoints.rotate("alice", hook.id, now_ms=3, overlap_ms=5)
    (due,) = await backend.outbox.due(NEVER, 10)
    assert due.endpoint == rotated
