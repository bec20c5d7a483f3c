"""The alert rules REST API: CRUD with ETags, quotas, scope, and no 500 for any body."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bittrade_feed.alerts.spec import parse_rule, rule_body
from bittrade_feed.auth.principal import ANONYMOUS, PRINCIPAL
from bittrade_feed.config import Config, parse_config
from bittrade_feed.models import TickDraft
from bittrade_feed.server.alerts import ALERT_STORE
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import TICKLOG
from tests.authutil import make_key, write_keys
from tests.fakeclock import FakeClock
from tests.servedapp import ServedApp, captured_logs, tracebacks

PAIRS = ("BTC-USD", "ETH-USD")
RULES = "/api/alerts/rules"
CROSS = {"pair": "BTC-USD", "kind": "crosses_up", "level": "100", "hysteresis": "1"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def config(db: Path, **alerts: Any) -> Config:
    return parse_config(
        {
            "database": {"path": str(db)},
            "feed": {"pairs": list(PAIRS), "sources": {p: ["simulated"] for p in PAIRS}},
            "aggregation": {"quorum": 1},
            "alerts": {"enabled": True, **alerts},
            "log": {"level": "warning"},
        }
    )


@web.middleware
async def as_header(request: web.Request, handler: Any) -> web.StreamResponse:
    """Stands in for the auth middleware: the principal from a test header."""
    who = request.headers.get("X-Test-Subject")
    if who is not None:
        scoped = request.headers.get("X-Test-Alerts", "1") == "1"
        request[PRINCIPAL] = replace(ANONYMOUS, kind="key", subject=who, alerts=scoped)
    return await handler(request)


async def client_for(
    aiohttp_client: AiohttpClient,
    cfg: Config,
    middlewares: list[Any] | None = None,
    clock: FakeClock | None = None,
) -> TestClient[web.Request, web.Application]:
    app = create_app(cfg, clock=clock or FakeClock(), fetch=False)
    for middleware in middlewares or []:
        app.middlewares.append(middleware)
    return await aiohttp_client(app)


async def test_off_by_default_nothing_is_mounted(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    cfg = config(tmp_path / "f.db")
    cfg = replace(cfg, alerts=replace(cfg.alerts, enabled=False))
    client = await client_for(aiohttp_client, cfg)
    for path in (RULES, "/api/alerts/webhooks"):
        resp = await client.get(path)
        assert resp.status == 404


async def test_create_get_update_delete_with_etags(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    resp = await client.post(RULES, json=CROSS)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    etag = resp.headers["ETag"]
    assert resp.headers["Location"] == f"{RULES}/{made['id']}"
    assert made["level"] == "100"
    assert made["frequency"] == {"mode": "once"}
    got = await client.get(f"{RULES}/{made['id']}")
    assert got.headers["ETag"] == etag
    listed = await (await client.get(RULES)).json()
    assert [r["id"] for r in listed["rules"]] == [made["id"]]

    changed = {**CROSS, "level": "120"}
    resp = await client.put(f"{RULES}/{made['id']}", json=changed, headers={"If-Match": etag})
    assert resp.status == 200
    new_etag = resp.headers["ETag"]
    assert new_etag != etag
    assert (await resp.json())["level"] == "120"
    stale = await client.put(f"{RULES}/{made['id']}", json=CROSS, headers={"If-Match": etag})
    assert stale.status == 412
    assert (await stale.json())["field"] == "If-Match"
    stale = await client.delete(f"{RULES}/{made['id']}", headers={"If-Match": etag})
    assert stale.status == 412
    gone = await client.delete(f"{RULES}/{made['id']}", headers={"If-Match": new_etag})
    assert gone.status == 204
    assert (await client.get(f"{RULES}/{made['id']}")).status == 404
    assert (await client.delete(f"{RULES}/{made['id']}")).status == 404


async def test_a_tick_fires_and_the_firing_is_listed(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    made = await (await client.post(RULES, json=CROSS)).json()
    ticklog = client.app[TICKLOG]
    for i, price in enumerate(("98", "101")):
        await ticklog.append(TickDraft("BTC-USD", Decimal(price), 1000 + i, ("simulated",)))
    url = f"{RULES}/{made['id']}/firings"
    for _ in range(200):
        firings = (await (await client.get(url)).json())["firings"]
        if firings:
            break
        await asyncio.sleep(0.01)
    (firing,) = firings
    assert firing["tick_id"] == 2
    assert firing["data"]["direction"] == "up"
    assert firing["data"]["simulated"] is True
    rule = await (await client.get(f"{RULES}/{made['id']}")).json()
    assert (rule["fired"], rule["done"]) == (1, True)
    test = await client.post(f"{RULES}/{made['id']}/test")
    assert test.status == 201
    assert (await test.json())["tick_id"] is None
    assert len((await (await client.get(url)).json())["firings"]) == 2
    bad = await client.get(url + "?limit=0")
    assert bad.status == 400


async def test_quota_per_owner(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db", max_rules_per_owner=2))
    answers = await asyncio.gather(*(client.post(RULES, json=CROSS) for _ in range(5)))
    assert sorted(a.status for a in answers) == [201, 201, 409, 409, 409]


async def test_owner_is_the_principal_and_scope_is_required(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"), [as_header])
    alice, bob = {"X-Test-Subject": "alice"}, {"X-Test-Subject": "bob"}
    made = await (await client.post(RULES, json=CROSS, headers=alice)).json()
    assert (await client.get(f"{RULES}/{made['id']}", headers=bob)).status == 404
    assert (await (await client.get(RULES, headers=bob)).json())["rules"] == []
    assert (await client.delete(f"{RULES}/{made['id']}", headers=bob)).status == 404
    unscoped = await client.get(RULES, headers={**alice, "X-Test-Alerts": "0"})
    assert unscoped.status == 403
    assert (await unscoped.json())["scope"] == "alerts"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ("not json", 400, "body"),
        ('{"pair": "BTC-USD", "kind": "above", "level": NaN}', 400, "body"),
        ("[]", 400, "body"),
        ("{}", 422, "kind"),
        ('{"kind": "sideways"}', 422, "kind"),
        ('{"kind": "above", "level": "1"}', 422, "pair"),
        ('{"kind": "above", "pair": "XRP-USD", "level": "1"}', 422, "pair"),
        ('{"kind": "above", "pair": "BTC-USD"}', 422, "level"),
        ('{"kind": "above", "pair": "BTC-USD", "level": "-1"}', 422, "level"),
        ('{"kind": "above", "pair": "BTC-USD", "level": "1e999"}', 422, "level"),
        ('{"kind": "above", "pair": "BTC-USD", "level": true}', 422, "level"),
        ('{"kind": "above", "pair": "BTC-USD", "level": "1", "pct": "3"}', 422, "pct"),
        (
            '{"kind": "crosses", "pair": "BTC-USD", "level": "1", "hysteresis": "2"}',
            422,
            "hysteresis",
        ),
        ('{"kind": "pct_move", "pair": "BTC-USD", "pct": "3", "window_s": 59}', 422, "window_s"),
        (
            '{"kind": "pct_move", "pair": "BTC-USD", "pct": "3", "window_s": 60, '
            '"direction": "sideways"}',
            422,
            "direction",
        ),
        (
            '{"kind": "pct_move", "pair": "BTC-USD", "pct": "100", "window_s": 60, '
            '"direction": "down"}',
            422,
            "pct",
        ),
        (
            '{"kind": "above", "pair": "BTC-USD", "level": "1", "frequency": {"mode": "repeat"}}',
            422,
            "frequency.cooldown_s",
        ),
        (
            '{"kind": "crosses", "pair": "BTC-USD", "level": "1", "frequency": {"mode": "once", '
            '"max_count": 2}}',
            422,
            "frequency.max_count",
        ),
        (
            '{"kind": "crosses", "pair": "BTC-USD", "level": "1", "frequency": {"every": 2}}',
            422,
            "frequency.every",
        ),
        (
            '{"kind": "crosses", "pair": "BTC-USD", "level": "1", '
            '"expires": "2001-01-01T00:00:00Z"}',
            422,
            "expires",
        ),
        ('{"kind": "crosses", "pair": "BTC-USD", "level": "1", "expires": "soon"}', 422, "expires"),
        (
            '{"kind": "crosses", "pair": "BTC-USD", "level": "1", '
            '"expires": "9999-12-31T23:59:59-23:59"}',
            422,
            "expires",
        ),
    ],
)
async def test_bad_bodies_name_the_field(
    aiohttp_client: AiohttpClient, tmp_path: Path, body: str, status: int, field: str
) -> None:
    client = await client_for(aiohttp_client, config(tmp_path / "f.db"))
    resp = await client.post(RULES, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["field"] == field


# -- the canonical form round-trips ----------------------------------------------------------

decimals = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**9), places=2)
frequency = st.one_of(
    st.just({"mode": "once"}),
    st.builds(
        lambda c, m: {"mode": "repeat", "cooldown_s": c, "max_count": m},
        st.integers(1, 10**6),
        st.none() | st.integers(1, 1000),
    ),
)
level_bodies = st.builds(
    lambda kind, level, frequency: {
        "pair": "BTC-USD",
        "kind": kind,
        "level": str(level),
        "frequency": frequency,
    },
    st.sampled_from(["above", "below", "crosses", "crosses_up", "crosses_down"]),
    decimals,
    frequency,
)
move_bodies = st.builds(
    lambda pct, window, direction, frequency: {
        "pair": "ETH-USD",
        "kind": "pct_move",
        "pct": str(pct),
        "window_s": window,
        "direction": direction,
        "frequency": frequency,
    },
    st.decimals(min_value=Decimal("0.1"), max_value=Decimal(99), places=1),
    st.integers(60, 86_400),
    st.sampled_from(["up", "down", "either"]),
    frequency,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(level_bodies, move_bodies))
def test_canonical_body_round_trips(body: dict[str, Any]) -> None:
    rule = parse_rule(body)
    assert parse_rule(rule_body(rule)) == rule
    assert parse_rule(json.loads(json.dumps(rule_body(rule)))) == rule


# -- any JSON body: 201 or a problem naming a field, never a 500 -----------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(
        ["BTC-USD", "ETH-USD", "100", "0", "-1", "1e30", "2030-01-01T00:00:00Z", "1_0", " 5 "]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["above", "below", "crosses", "crosses_up", "crosses_down", "pct_move"]),
)
rule_like = st.dictionaries(
    st.sampled_from(
        [
            "pair",
            "kind",
            "level",
            "hysteresis",
            "pct",
            "window_s",
            "direction",
            "frequency",
            "expires",
        ]
    )
    | st.text(max_size=8),
    field_values,
    max_size=7,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    db = Path(tmp_path_factory.mktemp("alerts")) / "feed.sqlite3"
    server = ServedApp(config(db, max_rules_per_owner=100_000))
    try:
        yield server
    finally:
        server.close()


def _post(port: int, body: bytes) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", RULES, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(rule_like, json_values))
def test_any_json_body_is_created_or_names_a_field(served: ServedApp, body: object) -> None:
    with captured_logs() as records:
        status, answer = _post(served.port, json.dumps(body).encode())
    assert tracebacks(records) == []
    if status == 201:
        assert parse_rule(rule_body(parse_rule(body))) == parse_rule(body)
        return
    assert status in (400, 422), answer
    field = answer.get("field")
    assert isinstance(field, str)
    top = field.split(".", 1)[0]
    # the field is one the body has (an unknown key, even ""), or a required one it lacks
    known = {"body", "pair", "kind", "level", "pct", "window_s", "frequency", "expires"}
    assert top in known or (isinstance(body, dict) and field in body), (field, body)


async def test_with_auth_on_the_owner_is_the_key_and_the_scope_is_needed(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """The real auth middleware: no credential 401, no ``alerts`` scope 403, owners apart."""
    alice, alice_row = make_key("pairs:* alerts")
    bob, bob_row = make_key("pairs:* alerts")
    reader, reader_row = make_key("pairs:*")
    keys = write_keys(tmp_path / "keys.toml", alice_row, bob_row, reader_row)
    secret = tmp_path / "session.secret"
    secret.write_bytes(b"x" * 32)
    cfg = config(tmp_path / "f.db")
    cfg = replace(
        cfg,
        auth=parse_config(
            {"auth": {"enabled": True, "key_file": str(keys), "session_secret_file": str(secret)}}
        ).auth,
    )
    client = await client_for(aiohttp_client, cfg)
    assert (await client.get(RULES)).status == 401
    refused = await client.get(RULES, headers=bearer(reader))
    assert refused.status == 403
    assert (await refused.json())["scope"] == "alerts"
    made = await (await client.post(RULES, json=CROSS, headers=bearer(alice))).json()
    assert (await client.get(f"{RULES}/{made['id']}", headers=bearer(bob))).status == 404
    mine = await (await client.get(RULES, headers=bearer(alice))).json()
    assert [r["id"] for r in mine["rules"]] == [made["id"]]
    (only,) = await client.app[ALERT_STORE].all()
    assert only.owner == alice_row.id  # the principal's subject: the key id
