"""The Redis keys of one feed; the ``{prefix}`` hash tag keeps them in one Cluster slot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (``cluster.feed_key``)."""

    stream: str
    """The shared log: one entry per tick, entry id ``<tick id>-0``."""
    meta: str
    """Hash ``{epoch, seq}``: the id authority. Gone means Redis lost data: a new epoch."""
    leader: str
    """``<node>:<term>`` of the lease holder, with a TTL."""
    term: str
    """The fencing term counter, incremented on every acquisition."""

    @classmethod
    def for_prefix(cls, prefix: str) -> Keys:
        """The keys of the feed named ``prefix``."""
        tag = "{" + prefix + "}"
        return cls(f"{tag}:stream", f"{tag}:meta", f"{tag}:leader", f"{tag}:term")
