"""The cluster's lifecycle, ``/api/cluster`` and its ``/readyz`` checks (issue 12).

Kept out of ``app.py`` so that module only wires it. ``bittrade_feed.cluster`` (and so
``redis``) is imported only when ``[cluster]`` is configured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bittrade_feed.server.problems import Problem
from bittrade_feed.server.state import (
    CLOCK,
    CONFIG,
    FETCHER,
    HUB,
    METRICS,
    STORE,
    SUPERVISOR,
    TICKLOG,
)

if TYPE_CHECKING:
    from bittrade_feed.cluster import ClusterNode

CLUSTER: web.AppKey[ClusterNode] = web.AppKey("cluster")
CLUSTER_FETCH = web.AppKey("cluster_fetch", bool)
"""Whether this daemon competes for the lease (``create_app(fetch=...)``)."""


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """Join the cluster after the fetcher exists; leave it (lease released) first on stop."""
    config = app[CONFIG]
    if not config.cluster.enabled:
        yield
        return
    from bittrade_feed.cluster import ClusterNode  # noqa: PLC0415 - needs the 'cluster' extra

    node = ClusterNode(
        config,
        app[CLOCK],
        app[METRICS],
        app[TICKLOG],
        app[STORE],
        app[FETCHER],
        app[SUPERVISOR],
    )
    app[CLUSTER] = node
    # A client moving here from a daemon that is a little ahead waits for our log.
    app[HUB].ahead_wait = node.resume_wait
    node.start(fetch=app[CLUSTER_FETCH])
    try:
        yield
    finally:
        await node.stop()


def cluster_checks(app: web.Application) -> dict[str, dict[str, Any]]:
    """The cluster's ``/readyz`` entries (none on a single daemon)."""
    return app[CLUSTER].checks() if CLUSTER in app else {}


async def get_cluster(request: web.Request) -> web.Response:
    """This daemon, the leader, the term, the epoch, the log position and lag."""
    if CLUSTER not in request.app:
        raise Problem(404, "this daemon is not part of a cluster (set [cluster] redis_url)")
    return web.json_response(request.app[CLUSTER].to_json())
