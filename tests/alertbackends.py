"""Both alert backends behind one fixture: SQLite (one daemon) and Redis (a cluster).

``backend`` is parametrized over the two, so a store-level test written once runs against
each; ``Backend.twin()`` gives a second set of stores on their own connections (another
node, for Redis; the same database, for SQLite) for concurrency tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest
from redis.asyncio import Redis

from bittrade_feed.alerts.backend import (
    DeliveryBackend,
    EndpointBackend,
    OutboxBackend,
    RuleBackend,
)
from bittrade_feed.alerts.deliveries import Deliveries, OutboxStore
from bittrade_feed.alerts.endpoints import Endpoint, EndpointStore
from bittrade_feed.alerts.redis import (
    RedisAlertStore,
    RedisDeliveries,
    RedisEndpointStore,
    RedisOutboxStore,
)
from bittrade_feed.alerts.rules import Firing, Kind, RuleState
from bittrade_feed.alerts.spec import parse_rule
from bittrade_feed.alerts.store import AlertStore, Commit, StoredRule
from bittrade_feed.cluster.keys import Keys
from bittrade_feed.store.sqlite import Store
from tests.cluster.redisproc import RedisServer, running

PREFIX = "bt"
TOKEN = "node-a:1"
"""The lease token the tests put in the leader key (the Redis commit is fenced by it)."""


@dataclass
class Stores:
    """One node's view: the four data-access objects."""

    rules: RuleBackend
    endpoints: EndpointBackend
    deliveries: DeliveryBackend
    outbox: OutboxBackend


@dataclass
class Backend:
    """A backend under test and what the tests need to reach behind it."""

    name: str
    stores: Stores
    make_twin: Callable[[], Stores]
    redis: Redis | None = None
    server: RedisServer | None = None
    sqlite: Store | None = None
    token: list[str | None] = field(default_factory=lambda: [TOKEN])
    """``fence()`` answers ``token[0]``: set it to act as a deposed leader."""

    def twin(self) -> Stores:
        """The same data through other connections (another node)."""
        return self.make_twin()

    @property
    def rules(self) -> RuleBackend:
        return self.stores.rules

    @property
    def endpoints(self) -> EndpointBackend:
        return self.stores.endpoints

    @property
    def deliveries(self) -> DeliveryBackend:
        return self.stores.deliveries

    @property
    def outbox(self) -> OutboxBackend:
        return self.stores.outbox

    async def rule(
        self, owner: str = "alice", *endpoints: Endpoint, max_rules: int = 100
    ) -> StoredRule:
        """A new ``above 1`` rule of ``owner`` naming ``endpoints``."""
        body = {"pair": "BTC-USD", "kind": "above", "level": "1"}
        rule = parse_rule({**body, "webhooks": [e.id for e in endpoints]})
        return await self.rules.create(
            owner, rule, last_tick_id=0, now_ms=1_000, max_rules=max_rules
        )

    async def states(self) -> dict[str, tuple[str, int, str | None]]:
        """Every outbox row's (state, attempts, last_error), read behind the stores' backs."""
        if self.redis is None:
            return await self._sqlite_states()
        rows: dict[str, tuple[str, int, str | None]] = {}
        prefix = "{" + PREFIX + "}:alert:row:"
        for key in await self.redis.keys(prefix + "*"):
            state, attempts, error = await self.redis.hmget(
                key, ["state", "attempts", "last_error"]
            )
            rows[key.removeprefix(prefix)] = (state, int(attempts), error)
        return rows

    async def _sqlite_states(self) -> dict[str, tuple[str, int, str | None]]:
        assert self.sqlite is not None

        async def query(conn: aiosqlite.Connection) -> dict[str, tuple[str, int, str | None]]:
            rows = await conn.execute_fetchall(
                "SELECT id, state, attempts, last_error FROM alert_outbox WHERE channel='webhook'"
            )
            return {str(r[0]): (str(r[1]), int(r[2]), r[3]) for r in rows}

        return await self.sqlite.query(query, "test read")

    async def endpoint(self, owner: str = "alice", url: str = "https://a.example.com/") -> Endpoint:
        """A new endpoint of ``owner``."""
        return await self.endpoints.create(owner, url, now_ms=1_000, limit=100)


def change(stored: StoredRule, tick_id: int, *, fired: bool = True, at_ms: int = 5_000) -> Commit:
    """The commit of ``stored`` having seen ``tick_id`` (firing on it if ``fired``)."""
    state = RuleState(last_tick_id=tick_id, fired=1 if fired else 0)
    firing = (
        Firing(tick_id, "BTC-USD", Decimal(2), at_ms, Kind.ABOVE, None, "above 1", 1)
        if fired
        else None
    )
    return Commit(stored.id, stored.version, state.to_json(), firing, at_ms)


def _sqlite_stores(store: Store) -> Stores:
    return Stores(AlertStore(store), EndpointStore(store), Deliveries(store), OutboxStore(store))


def redis_stores(client: Redis, token: list[str | None], history: int = 1000) -> Stores:
    """The four Redis stores on ``client``, fenced by ``token[0]``."""
    return Stores(
        RedisAlertStore(client, PREFIX, lambda: token[0], history=history),
        RedisEndpointStore(client, PREFIX),
        RedisDeliveries(client, PREFIX),
        RedisOutboxStore(client, PREFIX),
    )


@contextlib.asynccontextmanager
async def open_backend(name: str, tmp_path: Path, *, history: int = 1000) -> AsyncIterator[Backend]:
    """A fresh backend called ``name`` (``sqlite`` or ``redis``)."""
    if name == "sqlite":
        store = await Store.open(tmp_path / "alerts.db")
        try:
            yield Backend(name, _sqlite_stores(store), lambda: _sqlite_stores(store), sqlite=store)
        finally:
            await store.close()
        return
    async with running(RedisServer(tmp_path / "redis")) as server:
        clients: list[Redis] = []

        def client() -> Redis:
            clients.append(server.client())
            return clients[-1]

        token: list[str | None] = [TOKEN]
        main = client()
        await main.set(Keys.for_prefix(PREFIX).leader, TOKEN)
        try:
            yield Backend(
                name,
                redis_stores(main, token, history),
                lambda: redis_stores(client(), token, history),
                main,
                server,
                token=token,
            )
        finally:
            for c in clients:
                await c.aclose()


BACKENDS = ("sqlite", "redis")


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each alert backend in turn."""
    async with open_backend(request.param, tmp_path) as made:
        yield made


def pending_ids(outbox: list[tuple[str, int, str, str]]) -> list[str]:
    """The ids of ``RuleBackend.outbox()`` rows."""
    return [row[0] for row in outbox]


__all__ = ["BACKENDS", "Backend", "backend", "change", "open_backend", "pending_ids"]
