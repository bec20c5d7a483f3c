"""What a publish through Redis can fail with; both are ``StoreError`` to the fetch loop.

The fetch loop already treats a ``StoreError`` from its sink as "this price was not
stored": it counts it, keeps the previous price, and lets the feed go stale by the usual
rules. A cluster that cannot assign an id must look exactly like that, never like success.
"""

from __future__ import annotations

from bittrade_feed.errors import StoreError


class ClusterUnavailable(StoreError):
    """Redis did not answer the publish, so no id was assigned (as far as we know)."""


class Fenced(StoreError):
    """Redis refused the publish: this daemon no longer holds the leader lease."""
