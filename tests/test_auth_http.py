"""Auth on the wire: 401/403, scopes on streams, login cookie, tickets, reauth, revocation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestClient

from bittrade_feed.auth.keys import KeyRecord, revoked, write_key_file
from bittrade_feed.config import Config
from bittrade_feed.server.app import create_app
from bittrade_feed.server.reload import reload_keys
from bittrade_feed.server.state import FETCHER, HUB, METRICS
from tests.authutil import (
    AUDIENCE,
    ISSUER,
    RSA_KEY,
    JwksServer,
    jwk_of,
    make_key,
    token,
    write_keys,
)
from tests.fakeclock import FakeClock
from tests.streamcheck import check_stream, stored_ticks
from tests.streamutil import events, frames, parse
from tests.test_streams import PAIRS, sim_config

NOW = 1_763_900_000.0  # FakeClock's wall time


def auth_config(
    daemon_config: Callable[..., Config],
    tmp_path: Path,
    *records: KeyRecord,
    stream: dict[str, Any] | None = None,
    **auth: Any,
) -> Config:
    """Two simulated pairs, auth on with a key file of ``records`` and a session secret."""
    keys = write_keys(tmp_path / "keys.toml", *records)
    secret = tmp_path / "session.secret"
    secret.write_bytes(b"x" * 32)
    section = {"enabled": True, "key_file": str(keys), "session_secret_file": str(secret)}
    return sim_config(daemon_config, auth=section | auth, stream=stream or {})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refusals(client: TestClient, reason: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_refusals_total", {"reason": reason}
    )
    return value or 0.0


async def test_public_and_protected_endpoints(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    """Public paths need nothing; the rest 401 with a challenge; history needs its scope."""
    key, record = make_key("pairs:*")
    client = await aiohttp_client(
        create_app(auth_config(daemon_config, tmp_path, record), fetch=False)
    )
    await client.app[FETCHER].run_cycle()
    for path in ("/api/price", "/healthz", "/", "/dashboard/dashboard.css", "/api/nope"):
        resp = await client.get(path)
        assert resp.status in (200, 404), path
        assert resp.status != 401
    for path in ("/api/price-stream", "/api/ws", "/api/sources", "/api/prices", "/metrics",
                 "/api/cluster", "/api/whoami"):  # fmt: skip
        resp = await client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="bittrade-feed"'
        assert resp.headers["Content-Type"] == "application/problem+json"
        body = await resp.json()
        assert body["title"] == "Unauthorized" and "needs a credential" in body["detail"]
    assert (await client.get("/api/sources", headers=bearer(key))).status == 200
    assert (await client.get("/metrics", headers=bearer(key))).status == 200
    history = await client.get("/api/prices", headers=bearer(key))
    assert history.status == 403
    assert "history scope" in (await history.json())["detail"]
    for header in ("Basic abc", "Bearer", f"bearer {key}x", "Bearer btk_zzzz_notthekey1234567"):
        assert (await client.get("/api/sources", headers={"Authorization": header})).status == 401
    assert refusals(client, "auth") == 11
    assert refusals(client, "scope") == 1


async def test_auth_off_leaves_everything_open(
    aiohttp_client: AiohttpClient, daemon_config
) -> None:
    """Off by default: no credential needed, whoami is anonymous, login says auth is off."""
    client = await aiohttp_client(create_app(sim_config(daemon_config), fetch=False))
    assert (await client.get("/api/sources")).status == 200
    who = await client.get("/api/whoami")
    assert (await who.json())["kind"] == "anonymous"
    login = await client.post("/api/login", json={"key": "x"})
    assert login.status == 404 and "authentication is off" in (await login.json())["detail"]


async def test_stream_gets_granted_pairs_and_403_names_refused_ones(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    key, record = make_key("pairs:BTC-*")
    config = auth_config(daemon_config, tmp_path, record, public=["/healthz"])
    client = await aiohttp_client(create_app(config, fetch=False))
    await client.app[FETCHER].run_cycle()
    refused = await client.get("/api/price-stream?pairs=ETH-USD", headers=bearer(key))
    assert refused.status == 403
    body = await refused.json()
    assert body["pairs"] == ["ETH-USD"] and "ETH-USD" in body["detail"]
    for query in ("?pairs=BTC-USD,ETH-USD", ""):
        async with client.get(f"/api/price-stream{query}", headers=bearer(key)) as resp:
            assert resp.status == 200
            got = await events(resp, 2)
            assert [(e, d["pair"]) for _, e, d in got] == [("price", "BTC-USD"),
                                                          ("status", "BTC-USD")]  # fmt: skip
    one = await client.get("/api/price?pair=ETH-USD", headers=bearer(key))
    assert one.status == 403 and (await one.json())["pairs"] == ["ETH-USD"]
    assert (await client.get("/api/price?pair=BTC-USD", headers=bearer(key))).status == 200
    async with client.ws_connect("/api/ws?pairs=BTC-USD", headers=bearer(key)) as ws:
        assert (await ws.receive_json(timeout=5))["data"]["pair"] == "BTC-USD"
        await ws.receive_json(timeout=5)  # status
        await ws.send_json({"op": "subscribe", "pairs": ["ETH-USD"]})
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "error" and "does not grant ETH-USD" in err["data"]["detail"]
        await ws.send_json({"op": "subscribe", "pairs": ["ETH-USD", "BTC-USD"]})
        err = await ws.receive_json(timeout=5)
        assert err["event"] == "error" and "ETH-USD" in err["data"]["detail"]
        await client.app[FETCHER].run_cycle()
        live = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert {m["data"]["pair"] for m in live} == {"BTC-USD"}


async def test_login_cookie_whoami_logout(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, clock: FakeClock
) -> None:
    """Login sets an HttpOnly, SameSite=Strict cookie that streams and whoami accept."""
    key, record = make_key("pairs:* history", expires=NOW + 3600)
    client = await aiohttp_client(
        create_app(auth_config(daemon_config, tmp_path, record), clock=clock, fetch=False)
    )
    await client.app[FETCHER].run_cycle()
    assert (await client.post("/api/login", json={"key": key + "x"})).status == 401
    assert (await client.post("/api/login", json={"nokey": 1})).status == 400
    broken = await client.post(
        "/api/login", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400
    login = await client.post("/api/login", json={"key": key})
    assert login.status == 204
    cookie = login.cookies["bt_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on loopback
    assert 3590 <= int(cookie["max-age"]) <= 3600  # the key's expiry comes before the ttl
    assert key not in cookie.value
    who = await (await client.get("/api/whoami")).json()
    assert who == {"kind": "key", "subject": record.id, "pairs": ["*"], "history": True,
                   "alerts": False, "expires": "2025-11-23T13:13:20.000Z"}  # fmt: skip
    async with client.get("/api/price-stream") as resp:
        assert resp.status == 200
        assert (await events(resp, 1))[0][1] == "price"
    assert (await client.get("/api/prices")).status == 200
    assert (await client.post("/api/logout")).status == 204
    assert (await client.get("/api/whoami")).status == 401
    form = await client.post("/api/login", data={"key": key})
    assert form.status == 204
    assert (await client.get("/api/whoami")).status == 200


async def test_cookie_secure_when_configured(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    key, record = make_key()
    config = auth_config(daemon_config, tmp_path, record, cookie_secure=True)
    client = await aiohttp_client(create_app(config, fetch=False))
    login = await client.post("/api/login", json={"key": key})
    assert login.cookies["bt_session"]["secure"]


async def test_stream_ticket_is_single_use_on_streams_only(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    key, record = make_key()
    client = await aiohttp_client(
        create_app(auth_config(daemon_config, tmp_path, record), fetch=False)
    )
    await client.app[FETCHER].run_cycle()
    assert (await client.post("/api/stream-ticket")).status == 401
    issued = await client.post("/api/stream-ticket", headers=bearer(key))
    body = await issued.json()
    assert body["expires_in"] == 30
    ticket = body["ticket"]
    async with client.get(f"/api/price-stream?ticket={ticket}") as resp:
        assert resp.status == 200
        await events(resp, 1)
    again = await client.get(f"/api/price-stream?ticket={ticket}")
    assert again.status == 401 and "already used" in (await again.json())["detail"]
    other = (await (await client.post("/api/stream-ticket", headers=bearer(key))).json())["ticket"]
    wrong = await client.get(f"/api/sources?ticket={other}")
    assert wrong.status == 401 and "stream endpoints only" in (await wrong.json())["detail"]
    ws_ticket = await (await client.post("/api/stream-ticket", headers=bearer(key))).json()
    async with client.ws_connect(f"/api/ws?ticket={ws_ticket['ticket']}") as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "price"


async def _read_to_end(resp: Any, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    async with asyncio.timeout(timeout):
        body = await resp.content.read()
    return [parse(f + b"\n\n") for f in body.split(b"\n\n") if f.strip()]


async def test_stream_closed_within_a_second_of_expiry_then_resumed_without_gap(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, clock: FakeClock
) -> None:
    """At the key's expiry the stream gets reauth and ends; a fresh key and Last-Event-ID
    resume it with every id stored meanwhile, none twice."""
    old_key, old = make_key(expires=NOW + 10)
    new_key, new = make_key()
    config = auth_config(daemon_config, tmp_path, old, new, stream={"heartbeat": 300})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    fetcher = client.app[FETCHER]
    await fetcher.run_cycle()
    got: list[tuple[Any, ...]] = []
    async with client.get("/api/price-stream", headers=bearer(old_key)) as resp:
        got += await events(resp, 4)  # two prices, two statuses
        await fetcher.run_cycle()
        got += await events(resp, 2)
        await clock.advance(9.0)
        with pytest.raises(TimeoutError):
            await frames(resp, 1, timeout=0.2)  # 1 s before expiry: still open, nothing sent
        await clock.advance(1.0)  # at expiry: the timer's next tick (<= 1 s) closes it
        rest = await _read_to_end(resp)
    assert rest == [(None, "reauth", {"reason": "expired"})]
    assert (await client.get("/api/price-stream", headers=bearer(old_key))).status == 401
    await fetcher.run_cycle()  # published while the client is away
    last = max(int(i) for i, e, _ in got if e == "price")
    stored = await stored_ticks(config.database.path)
    check_stream(got, stored, PAIRS)
    headers = bearer(new_key) | {"Last-Event-ID": str(last)}
    async with client.get("/api/price-stream", headers=headers) as resp:
        resumed = await events(resp, 4)
    check_stream(resumed, stored, PAIRS, resume_from=last)
    ids = [int(i) for i, e, _ in got + resumed if e == "price"]
    assert ids == list(range(1, 7))
    closed = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_connections_closed_total", {"transport": "sse", "reason": "expired"}
    )
    assert closed == 1


async def test_lifetime_earlier_than_expiry_is_not_reauth(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, clock: FakeClock
) -> None:
    """The earlier deadline wins; stream.max_lifetime ends a stream without reauth."""
    key, record = make_key(expires=NOW + 1000)
    config = auth_config(daemon_config, tmp_path, record, stream={"max_lifetime": 10})
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    async with client.get("/api/price-stream", headers=bearer(key)) as resp:
        await frames(resp, 1)
        await clock.advance(20)
        rest = await _read_to_end(resp)
    assert all(e != "reauth" for _, e, _ in rest)


async def test_websocket_reauth_then_close_4001(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, clock: FakeClock
) -> None:
    key, record = make_key(expires=NOW + 5)
    config = auth_config(daemon_config, tmp_path, record)
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    await client.app[FETCHER].run_cycle()
    async with client.ws_connect("/api/ws?pairs=BTC-USD", headers=bearer(key)) as ws:
        await ws.receive_json(timeout=5)
        await ws.receive_json(timeout=5)
        await clock.advance(6)
        assert await ws.receive_json(timeout=5) == {
            "event": "reauth",
            "data": {"reason": "expired"},
        }
        closing = await ws.receive(timeout=5)
        assert ws.close_code == 4001, closing


async def test_revocation_on_reload_closes_only_that_keys_streams(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    """After the key file revokes key A and is reloaded, A's streams (SSE, WS, cookie
    session) get reauth "revoked"; B's stream goes on; A is refused from then on."""
    key_a, rec_a = make_key()
    key_b, rec_b = make_key()
    config = auth_config(daemon_config, tmp_path, rec_a, rec_b)
    client = await aiohttp_client(create_app(config, fetch=False))
    fetcher = client.app[FETCHER]
    await fetcher.run_cycle()
    assert (await client.post("/api/login", json={"key": key_a})).status == 204
    a_cookie = await client.get("/api/price-stream?pairs=BTC-USD")
    client.session.cookie_jar.clear()
    a_sse = await client.get("/api/price-stream?pairs=BTC-USD", headers=bearer(key_a))
    b_sse = await client.get("/api/price-stream?pairs=BTC-USD", headers=bearer(key_b))
    a_ws = await client.ws_connect("/api/ws?pairs=BTC-USD", headers=bearer(key_a))
    for resp in (a_cookie, a_sse, b_sse):
        await events(resp, 2)
    await a_ws.receive_json(timeout=5)
    await a_ws.receive_json(timeout=5)
    write_key_file(tmp_path / "keys.toml", [revoked(rec_a), rec_b])
    assert reload_keys(client.app) is None
    for resp in (a_cookie, a_sse):
        assert await _read_to_end(resp) == [(None, "reauth", {"reason": "revoked"})]
    assert await a_ws.receive_json(timeout=5) == {"event": "reauth", "data": {"reason": "revoked"}}
    await a_ws.receive(timeout=5)
    assert a_ws.close_code == 4001
    await fetcher.run_cycle()
    (live,) = await events(b_sse, 1)
    assert live[1] == "price" and live[2]["pair"] == "BTC-USD"
    assert client.app[HUB].count == 1
    assert (await client.get("/api/sources", headers=bearer(key_a))).status == 401
    b_sse.close()


async def test_reload_with_a_broken_key_file_keeps_the_old_keys(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    key, record = make_key()
    config = auth_config(daemon_config, tmp_path, record)
    client = await aiohttp_client(create_app(config, fetch=False))
    (tmp_path / "keys.toml").write_text("[[key]]\nid = 1\n")
    error = reload_keys(client.app)
    assert error is not None and "key[0].id" in error
    assert (await client.get("/api/sources", headers=bearer(key))).status == 200


@pytest.mark.parametrize("seed", range(8))
async def test_revocation_racing_new_streams_leaves_none_open(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, seed: int
) -> None:
    """A key revoked while its streams are being opened (authenticated, not yet attached to
    the hub): every one of them is refused or gets reauth; none stays open."""
    rnd = random.Random(seed)
    key, record = make_key()
    config = auth_config(daemon_config, tmp_path, record)
    client = await aiohttp_client(create_app(config, fetch=False))
    await client.app[FETCHER].run_cycle()
    hub = client.app[HUB]
    subscribe = hub.subscribe
    revoke_at = rnd.randrange(12)
    calls = 0

    async def subscribe_then_maybe_revoke(*args: Any, **kwargs: Any) -> Any:
        # The revocation lands in the await gap between authentication and attaching.
        nonlocal calls
        calls += 1
        if calls == revoke_at + 1:
            write_key_file(tmp_path / "keys.toml", [revoked(record)])
            reload_keys(client.app)
        for _ in range(rnd.randrange(3)):
            await asyncio.sleep(0)
        return await subscribe(*args, **kwargs)

    hub.subscribe = subscribe_then_maybe_revoke  # type: ignore[method-assign]

    async def open_stream() -> str:
        for _ in range(rnd.randrange(6)):
            await asyncio.sleep(0)
        async with client.get("/api/price-stream", headers=bearer(key)) as resp:
            if resp.status == 401:
                return "refused"
            got = await _read_to_end(resp)
        assert got[-1] == (None, "reauth", {"reason": "revoked"}), got[-3:]
        return "reauth"

    outcomes = await asyncio.gather(*(open_stream() for _ in range(12)))
    assert "reauth" in outcomes
    assert hub.count == 0


async def test_jwt_from_a_jwks_url_through_the_middleware_and_login(
    aiohttp_client: AiohttpClient,
    aiohttp_server: Any,
    daemon_config,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """A stream and a login with an RS256 token whose key is fetched from a local JWKS;
    the JWT's scopes apply; an unknown kid is 401 and costs at most one refetch."""
    jwks = JwksServer()
    jwks.keys = [jwk_of(RSA_KEY, "k1")]
    server = await aiohttp_server(jwks.app())
    issuer = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"],
              "jwks_url": str(server.make_url("/jwks.json"))}  # fmt: skip
    config = auth_config(daemon_config, tmp_path, jwt=[issuer])
    client = await aiohttp_client(create_app(config, clock=clock, fetch=False))
    await client.app[FETCHER].run_cycle()
    good = token(RSA_KEY, "RS256", headers={"kid": "k1"}, scope="pairs:ETH-USD")
    async with client.get("/api/price-stream", headers=bearer(good)) as resp:
        assert resp.status == 200
        got = await events(resp, 2)
    assert [d["pair"] for _, _, d in got] == ["ETH-USD", "ETH-USD"]
    assert (await client.get("/api/prices?pair=ETH-USD", headers=bearer(good))).status == 403
    unknown = token(RSA_KEY, "RS256", headers={"kid": "k9"})
    for _ in range(3):
        resp = await client.get("/api/sources", headers=bearer(unknown))
        assert resp.status == 401 and "k9" in (await resp.json())["detail"]
    assert jwks.fetches == 1  # within jwks_min_refetch of the first fetch: no refetch
    await clock.advance(31)
    for _ in range(3):
        assert (await client.get("/api/sources", headers=bearer(unknown))).status == 401
    assert jwks.fetches == 2  # one refetch for k9, then rate-limited again
    assert (await client.post("/api/login", json={"key": good})).status == 204
    who = await (await client.get("/api/whoami")).json()
    assert who["kind"] == "jwt" and who["subject"] == f"{ISSUER}|alice"
    opened = client.app[METRICS].registry.get_sample_value(
        "bittrade_feed_streams_opened_total", {"transport": "sse", "auth": "jwt"}
    )
    assert opened == 1


async def test_login_body_limits_and_kinds(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path
) -> None:
    """A login body that is too big, of another type, or chunked in pieces is handled."""
    key, record = make_key()
    client = await aiohttp_client(
        create_app(auth_config(daemon_config, tmp_path, record), fetch=False)
    )
    big = await client.post("/api/login", json={"key": "x" * 20_000})
    assert big.status == 413
    text = await client.post("/api/login", data=key, headers={"Content-Type": "text/plain"})
    assert text.status == 415

    async def pieces() -> Any:
        body = ('{"key": "' + key + '"}').encode()
        for i in range(0, len(body), 7):
            yield body[i : i + 7]
            await asyncio.sleep(0.01)

    chunked = await client.post(
        "/api/login", data=pieces(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status == 204
