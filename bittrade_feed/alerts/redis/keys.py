"""The Redis keys of the alert data, under the cluster's ``{prefix}`` hash tag.

The scripts build every key they touch from ``AlertKeys.base`` (a new rule's or
firing's id is only known inside the script, from ``INCR``), and get one fixed key of the
same slot as ``KEYS[1]`` for routing (the leader key, for the fenced commit). All of them
carry the same hash tag, so they live in one Redis Cluster slot with the shared log.

Layout (``B`` = ``{prefix}:alert``)::

    B:ids:rule, B:ids:firing           INCR counters: rule ids, firing ids
    B:rules                            zset of every rule id (score = id)
    B:rule:<id>                        hash: the rule (owner, pair, kind, params, ...)
    B:own-rules:<owner>                zset of the owner's rule ids: the quota is its ZCARD
    B:firing:<id>                      hash: rule_id, owner, tick_id, at_ms, payload, rows
    B:rule-firings:<rule>              zset of the rule's retained firing ids
    B:rule-ticks:<rule>                hash tick id -> firing id: one firing per (rule, tick)
    B:own-firings:<owner>              zset of the owner's retained firing ids (resume)
    B:fired                            stream: every firing, for the fan-out to every node
    B:rule-changes                     stream: ids of rules created, replaced or deleted
    B:endpoint:<id>                    hash: the endpoint (owner, url, secret, ...)
    B:own-endpoints:<owner>            zset of the owner's endpoint ids (score = created_ms)
    B:endpoint-rows:<endpoint>         set of the endpoint's pending rows
    B:row:<id>                         hash: one outbox row (state, attempts, payload, ...)
    B:rule-rows:<rule>                 set of the rule's outbox rows
    B:due                              zset of pending rows, score = next_at_ms
    B:own-failed:<owner>               zset of the owner's failed rows, score = firing id
"""

from __future__ import annotations

from dataclasses import dataclass

from bittrade_feed.cluster.keys import Keys


@dataclass(frozen=True, slots=True)
class AlertKeys:
    """The fixed alert keys of one feed, and the base the scripts build the others from."""

    base: str
    leader: str
    """The lease key (``cluster.keys.Keys.leader``): the commit is fenced by its value."""
    rule_ids: str
    firing_ids: str
    rules: str
    fired: str
    rule_changes: str
    due: str

    @classmethod
    def for_prefix(cls, prefix: str) -> AlertKeys:
        """The alert keys of the feed named ``prefix`` (``cluster.feed_key``)."""
        base = "{" + prefix + "}:alert"
        return cls(
            base=base,
            leader=Keys.for_prefix(prefix).leader,
            rule_ids=f"{base}:ids:rule",
            firing_ids=f"{base}:ids:firing",
            rules=f"{base}:rules",
            fired=f"{base}:fired",
            rule_changes=f"{base}:rule-changes",
            due=f"{base}:due",
        )

    def rule(self, rule_id: int) -> str:
        """The hash of one rule."""
        return f"{self.base}:rule:{rule_id}"

    def endpoint(self, endpoint_id: str) -> str:
        """The hash of one endpoint."""
        return f"{self.base}:endpoint:{endpoint_id}"

    def row(self, row_id: str) -> str:
        """The hash of one outbox row."""
        return f"{self.base}:row:{row_id}"
