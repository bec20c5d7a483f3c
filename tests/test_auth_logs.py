"""No credential (API key, JWT, session cookie, ticket) ever appears in a log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient
from aiohttp.test_utils import TestServer, make_mocked_request
from hypothesis import assume, given
from hypothesis import strategies as st

from bittrade_feed.ops import logs
from bittrade_feed.server.accesslog import SafeAccessLogger
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import FETCHER
from tests.authutil import AUDIENCE, ISSUER, make_key, token
from tests.streamutil import events
from tests.test_auth_http import auth_config, bearer

SECRETISH = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16,
                    max_size=60)  # fmt: skip


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@given(SECRETISH, SECRETISH, SECRETISH)
def test_access_line_never_has_query_or_headers(ticket: str, key: str, cookie: str) -> None:
    """Whatever the query and headers hold, the access line shows only the path."""
    lines = _Lines()
    logger = logging.getLogger("test.access")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        request = make_mocked_request(
            "GET",
            f"/api/price-stream?ticket={ticket}&pairs=BTC-USD",
            headers={"Authorization": f"Bearer {key}", "Cookie": f"bt_session={cookie}"},
        )
        SafeAccessLogger(logger, "").log(request, web.Response(status=200), 0.25)
    finally:
        logger.removeHandler(lines)
    (line,) = lines.lines
    assert '"GET /api/price-stream" 200' in line
    for secret in (ticket, key, cookie):
        assert secret not in line


@given(st.text(max_size=20), SECRETISH, st.sampled_from(["key", "ticket", "bearer", "cookie"]))
def test_redaction_removes_credentials_anywhere(before: str, secret: str, kind: str) -> None:
    """A credential inside any log text is cut out by the structlog redaction."""
    shaped = {
        "key": f"btk_abc123_{secret}",
        "ticket": f"/api/ws?ticket={secret}",
        "bearer": f"Authorization: Bearer {secret}",
        "cookie": f"Cookie: bt_session={secret}",
    }[kind]
    assume(secret not in before)
    assert secret not in logs.redact_text(f"{before} {shaped} after")


def test_redaction_removes_jwts() -> None:
    jwt_text = token()
    assert jwt_text not in logs.redact_text(f"token {jwt_text} refused")


@pytest.fixture
def all_lines() -> Iterator[list[str]]:
    """Every line any logger writes, structlog's and aiohttp's access log included."""
    handler = _Lines()
    root = logging.getLogger()
    saved = root.level, logging.getLogger("aiohttp.access").level
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        logging.getLogger("aiohttp.access").setLevel(saved[1])
        structlog.reset_defaults()


async def test_no_credential_in_any_log_line_of_a_whole_session(
    aiohttp_client: AiohttpClient, daemon_config, tmp_path: Path, all_lines: list[str]
) -> None:
    """Login, cookie stream, ticket stream, Bearer key and JWT, refusals: nothing leaks."""
    key, record = make_key("pairs:* history")
    secret = tmp_path / "jwt.secret"
    secret.write_bytes(b"j" * 40)
    issuer = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["HS256"],
              "secret_file": str(secret)}  # fmt: skip
    config = auth_config(daemon_config, tmp_path, record, jwt=[issuer])
    server = TestServer(create_app(config, fetch=False))
    # What cli.serve installs (runner_options); aiohttp's default would log ?ticket=.
    await server.start_server(access_log_class=SafeAccessLogger)
    client = await aiohttp_client(server)
    await client.app[FETCHER].run_cycle()
    jwt_text = token(b"j" * 40, exp=2_000_000_000)
    credentials = [key, jwt_text]
    assert (await client.post("/api/login", json={"key": key + "nope"})).status == 401
    login = await client.post("/api/login", json={"key": key})
    credentials.append(login.cookies["bt_session"].value)
    async with client.get("/api/price-stream") as resp:
        await events(resp, 1)
    client.session.cookie_jar.clear()
    for _ in range(2):
        ticket = await (await client.post("/api/stream-ticket", headers=bearer(key))).json()
        credentials.append(ticket["ticket"])
        async with client.get(f"/api/price-stream?ticket={ticket['ticket']}") as resp:
            assert resp.status == 200
            await events(resp, 1)
    again = await client.get(f"/api/price-stream?ticket={credentials[-1]}")  # spent: 401
    assert again.status == 401
    for presented in (jwt_text, key):
        async with client.get("/api/price-stream", headers=bearer(presented)) as resp:
            assert resp.status == 200
            await events(resp, 1)
    assert (await client.get("/api/prices", headers=bearer(jwt_text))).status == 200
    assert (await client.get("/api/sources", headers=bearer(jwt_text + "x"))).status == 401
    await client.close()
    # The access log did write lines (a stream cut by its client is logged by none).
    for request in ('"POST /api/login" 204', '"POST /api/stream-ticket" 200',
                    '"GET /api/price-stream" 401', '"GET /api/prices" 200'):  # fmt: skip
        assert any(request in line for line in all_lines), request
    for credential in credentials:
        for line in all_lines:
            assert credential not in line
