"""Rules, firings and the outbox rows a firing queues, in Redis (``backend.RuleBackend``).

See ``backend`` for the interface and ``keys`` for the layout. Each write is one Lua
script (``scripts``), so quotas, If-Match versions and "one firing per (rule, tick)" are
checked at Redis in the same atomic step as the write they guard, whichever node asks.
``commit`` is fenced: it writes only while the leader key holds ``fence()``'s token.

Retention (one daemon's SQLite keeps everything): a rule keeps its newest ``history``
firings; an older one goes with its delivered and failed rows (a pending row stays until
its last attempt). The ``fired`` and ``rule-changes`` streams keep about ``FIRED_MAXLEN``
and ``CHANGES_MAXLEN`` entries.

Ids come from ``INCR`` counters. If Redis loses one (a restart without persistence, a
failover that lost the last writes), the next firing id would repeat one a stream client
or a webhook receiver already holds and drops as a duplicate (a rule id, one an ETag
names); so each script that takes an id gets the highest this node has seen (recorded,
read or followed), and a counter at or below it jumps 1000 above it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from bittrade_feed.alerts.redis.calls import call
from bittrade_feed.alerts.redis.feed import follow
from bittrade_feed.alerts.redis.keys import AlertKeys
from bittrade_feed.alerts.redis.scripts import (
    COMMIT,
    CREATE_RULE,
    DELETE_RULE,
    PENDING_ROWS,
    PRELUDE,
    READ_FIRINGS,
    READ_RULES,
    REPLACE_RULE,
    RULE_FIELDS,
    TEST_FIRE,
)
from bittrade_feed.alerts.rules import Rule, RuleState
from bittrade_feed.alerts.spec import to_stored
from bittrade_feed.alerts.store import (
    Commit,
    QuotaExceeded,
    StoredFiring,
    StoredRule,
    VersionMismatch,
    definition,
    dump,
    firing_row,
    rule_row,
)
from bittrade_feed.cluster.errors import Fenced

FIRING_HISTORY = 1000
"""Firings kept per rule (the API lists at most 1000 too)."""
FIRED_MAXLEN = 10_000
"""Entries the ``fired`` stream keeps (about): how far a node's fan-out may fall behind."""
CHANGES_MAXLEN = 10_000
"""Entries the ``rule-changes`` stream keeps (about)."""
PAGE = 1000
"""Rules read per script call by ``all``."""


class RedisAlertStore:
    """``RuleBackend`` and ``FiringFeed`` on Redis (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        fence: Callable[[], str | None],
        *,
        reader: Redis | None = None,
        history: int = FIRING_HISTORY,
    ) -> None:
        if history < 1:
            raise ValueError("history must keep at least one firing per rule")
        self._redis = redis
        self._reader = reader or redis
        self._keys = AlertKeys.for_prefix(prefix)
        self._fence = fence
        self._history = history
        self._seen = 0
        """The highest firing id this node has seen: the floor of a counter Redis lost."""
        self._seen_rule = 0
        """The same for rule ids."""
        script = redis.register_script
        self._create = script(PRELUDE + CREATE_RULE)
        self._replace = script(PRELUDE + REPLACE_RULE)
        self._delete = script(PRELUDE + DELETE_RULE)
        self._commit = script(PRELUDE + COMMIT)
        self._test_fire = script(PRELUDE + TEST_FIRE)
        self._read_rules = script(PRELUDE + READ_RULES)
        self._read_firings = script(PRELUDE + READ_FIRINGS)
        self._pending = script(PRELUDE + PENDING_ROWS)

    # -- writes ----------------------------------------------------------------------

    async def create(
        self, owner: str, rule: Rule, *, last_tick_id: int, now_ms: int, max_rules: int
    ) -> StoredRule:
        """A new rule that starts after tick ``last_tick_id``; ``QuotaExceeded`` if full."""
        state = RuleState(last_tick_id=last_tick_id)
        head: list[Any] = [self._keys.base, owner, max_rules, now_ms]
        args = [*head, *self._definition(rule, state)]
        reply = await call(
            self._create(keys=[self._keys.rules], args=[*args, CHANGES_MAXLEN, self._seen_rule]),
            "cannot create alert rule",
        )
        if int(reply) < 0:
            raise QuotaExceeded(owner, max_rules)
        self._seen_rule = max(self._seen_rule, int(reply))
        return StoredRule(int(reply), owner, rule, state, 1, now_ms)

    async def replace(
        self, owner: str, rule_id: int, rule: Rule, *, version: int | None, last_tick_id: int
    ) -> StoredRule:
        """A new definition with a fresh state, if at ``version`` (``None``: any)."""
        state = RuleState(last_tick_id=last_tick_id)
        args: list[Any] = [self._keys.base, owner, rule_id, _version(version)]
        reply = await call(
            self._replace(
                keys=[self._keys.rules],
                args=[*args, *self._definition(rule, state), CHANGES_MAXLEN],
            ),
            f"cannot update alert rule {rule_id}",
        )
        _check(rule_id, reply)
        return StoredRule(rule_id, owner, rule, state, int(reply[1]), int(reply[2]))

    async def delete(self, owner: str, rule_id: int, *, version: int | None) -> None:
        """Delete a rule with its firings and all its outbox rows."""
        args: list[Any] = [self._keys.base, owner, rule_id, _version(version), CHANGES_MAXLEN]
        reply = await call(
            self._delete(keys=[self._keys.rules], args=args), f"cannot delete alert rule {rule_id}"
        )
        _check(rule_id, reply)

    async def commit(self, changes: Sequence[Commit]) -> list[StoredFiring]:
        """States, firings, their rows and fan-out entries in one script, fenced.

        ``Fenced`` (nothing written) unless the leader key holds ``fence()``'s token.
        """
        token = self._fence()
        if token is None:
            raise Fenced("this node is not the cluster leader; alert firings were not saved")
        args: list[Any] = [self._keys.base, token, self._history, FIRED_MAXLEN, self._seen]
        for c in changes:
            tick = "" if c.firing is None else str(c.firing.tick_id)
            body = "" if c.firing is None else dump(c.firing.to_json())
            last = int(c.state["last_tick_id"])
            args += [c.rule_id, c.version, dump(c.state), last, tick, body, c.at_ms]
        reply = await call(
            self._commit(keys=[self._keys.leader], args=args), "cannot record alert firings"
        )
        recorded: list[StoredFiring] = []
        for index, firing_id in reply:  # in change order
            c = changes[int(index)]
            assert c.firing is not None
            firing = StoredFiring(
                int(firing_id), c.rule_id, c.firing.tick_id, c.at_ms, c.firing.to_json()
            )
            recorded.append(firing)
        return self._saw(recorded)

    async def test_fire(
        self, owner: str, rule_id: int, payload: dict[str, Any], now_ms: int
    ) -> StoredFiring:
        """A firing no tick caused, with its outbox rows and fan-out entry (not fenced)."""
        args: list[Any] = [self._keys.base, owner, rule_id, dump(payload), now_ms]
        reply = await call(
            self._test_fire(
                keys=[self._keys.rules], args=[*args, self._history, FIRED_MAXLEN, self._seen]
            ),
            f"cannot test-fire alert rule {rule_id}",
        )
        if int(reply) < 0:
            raise VersionMismatch(rule_id, None)
        return self._saw([StoredFiring(int(reply), rule_id, None, now_ms, payload)])[0]

    def _definition(self, rule: Rule, state: RuleState) -> list[Any]:
        """The script arguments of a create or replace, after the fixed ones."""
        stored = to_stored(rule)
        *head, expires = definition(stored, state, state.last_tick_id)
        return [*head, "" if expires is None else expires, ",".join(rule.webhooks)]

    # -- reads -----------------------------------------------------------------------

    async def get(self, owner: str, rule_id: int) -> StoredRule | None:
        """One of the owner's rules (``None``: none, or another owner's)."""
        fields: Any = await call(
            self._redis.hmget(self._keys.rule(rule_id), list(RULE_FIELDS)),
            "cannot read alert rule",
        )
        if fields[0] != owner:
            return None
        return rule_row([rule_id, *fields])

    async def owned(self, owner: str) -> list[StoredRule]:
        """The owner's rules, oldest first."""
        return await self._rules(f"own-rules:{owner}", 0, -1)

    async def all(self) -> list[StoredRule]:
        """Every rule of every owner, read a page at a time."""
        out: list[StoredRule] = []
        while True:
            page = await self._rules("rules", out[-1].id if out else 0, PAGE)
            out += page
            if len(page) < PAGE:
                return out

    async def _rules(self, index: str, after: int, limit: int) -> list[StoredRule]:
        reply: Any = await call(
            self._read_rules(keys=[self._keys.rules], args=[self._keys.base, index, after, limit]),
            "cannot read alert rules",
        )
        rules = [rule_row(r) for r in reply]
        self._seen_rule = max([self._seen_rule, *(r.id for r in rules)])
        return rules

    async def firings(self, owner: str, rule_id: int, limit: int) -> list[StoredFiring]:
        """A rule's newest firings first (empty for another owner's rule)."""
        return await self._firings(owner, str(rule_id), 0, limit)

    async def firings_after(self, owner: str, after: int, limit: int) -> list[StoredFiring]:
        """The owner's retained firings with an id above ``after``, oldest first."""
        return await self._firings(owner, "", after, limit)

    async def _firings(self, owner: str, rule: str, after: int, limit: int) -> list[StoredFiring]:
        reply: Any = await call(
            self._read_firings(
                keys=[self._keys.rules], args=[self._keys.base, owner, rule, after, limit]
            ),
            "cannot read alert firings",
        )
        return self._saw([firing_row([i, r, t or None, at, p]) for i, r, t, at, p in reply])

    async def latest_firing_id(self) -> int:
        """The highest firing id handed out (0: none yet): the counter, which the scripts
        raise in the same atomic step that appends the firing to the ``fired`` stream."""
        value = await call(self._redis.get(self._keys.firing_ids), "cannot read alert firings")
        return int(value or 0)

    async def outbox(self) -> list[tuple[str, int, str, str]]:
        """Pending rows as (id, firing id, channel, state), oldest firing first."""
        reply: Any = await call(
            self._pending(keys=[self._keys.rules], args=[self._keys.base]),
            "cannot read the alert outbox",
        )
        rows = sorted((int(f), str(r)) for r, f in reply)
        return [(r, f, "webhook", "pending") for f, r in rows]

    # -- the cluster's fan-out -------------------------------------------------------

    async def follow_fired(
        self, last: str, block_ms: int
    ) -> tuple[str, list[tuple[str, StoredFiring]]]:
        """Firings committed after ``last`` (``"$"``: from now), as (owner, firing) pairs."""
        position, entries = await follow(self._reader, self._keys.fired, last, block_ms)
        got = [(fields["o"], decode_firing(fields["f"])) for _, fields in entries]
        self._saw([firing for _, firing in got])
        return position, got

    async def follow_rule_changes(self, last: str, block_ms: int) -> tuple[str, list[int]]:
        """Ids of rules created, replaced or deleted after ``last`` (``"$"``: from now)."""
        position, entries = await follow(self._reader, self._keys.rule_changes, last, block_ms)
        return position, [int(fields["r"]) for _, fields in entries]

    def _saw(self, firings: list[StoredFiring]) -> list[StoredFiring]:
        self._seen = max([self._seen, *(f.id for f in firings)])
        return firings


def decode_firing(text: str) -> StoredFiring:
    """A firing from the JSON the scripts write: ``[id, rule_id, tick_id, at_ms, payload]``."""
    ident, rule_id, tick_id, at_ms, payload = json.loads(text)
    tick = None if tick_id is None else int(tick_id)
    return StoredFiring(int(ident), int(rule_id), tick, int(at_ms), dict(payload))


def _version(version: int | None) -> str:
    return "" if version is None else str(version)


def _check(rule_id: int, reply: Any) -> None:
    """Raise what ``check_rule`` answered unless it was a pass."""
    code = int(reply[0])
    if code == -1:
        raise VersionMismatch(rule_id, None)
    if code == -2:
        raise VersionMismatch(rule_id, int(reply[1]))
