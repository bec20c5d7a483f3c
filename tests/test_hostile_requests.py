"""Property tests: no query string, header or WebSocket message gets a 5xx or a traceback."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import WSMsgType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bittrade_feed.config import parse_config
from bittrade_feed.server.state import FETCHER, HUB
from tests.servedapp import ServedApp, captured_logs, tracebacks

PAIRS = ("BTC-USD", "ETH-USD")
BURST = 10
ENDPOINTS = (
    "/api/price",
    "/api/prices",
    "/api/sources",
    "/api/price-stream",
    "/api/ws",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
)
PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """The daemon on simulated prices (six stored), served from its own thread."""
    db = Path(tmp_path_factory.mktemp("hostile")) / "feed.sqlite3"
    config = parse_config(
        {
            "database": {"path": str(db)},
            "feed": {"pairs": list(PAIRS), "sources": {p: ["simulated"] for p in PAIRS}},
            "aggregation": {"quorum": 1},
            # Hundreds of examples connect from 127.0.0.1 on a clock that never moves:
            # the new-stream rate limit (tested in test_limits.py) is off here.
            "stream": {"ws_ops_burst": BURST, "replay_limit": 4, "connect_burst": 0},
        }
    )
    server = ServedApp(config)
    for _ in range(3):
        server.run(server.app[FETCHER].run_cycle())
    try:
        yield server
    finally:
        server.close()


# -- what a client may send ----------------------------------------------------------------

# ASCII digits, and digits of other scripts that str.isdigit() also accepts.
digits = st.sampled_from(
    "0123456789\u00b2\u00b3\u00b9\u0661\u0662\u0663\u06f4\uff15\u07c1\u0966\u0e51"
)
number_like = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.text(digits, min_size=1, max_size=30),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e30", "253402300800", "9223372036854775808", "-0", "0x10", " 5", "5 "]),
)
time_like = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["Z", "z", "", "+23:59", "-23:59", "+24:00", ".999999Z", "+99:99"]),
    ),
)
pair_like = st.one_of(
    st.sampled_from([*PAIRS, "btc-usd", " ETH-USD ", "XRP-USD", "", ","]),
    st.lists(st.sampled_from([*PAIRS, "", "NOPE"]), max_size=5).map(",".join),
)
value = st.one_of(number_like, time_like, pair_like, st.text(max_size=60))
key = st.one_of(
    st.sampled_from(["pair", "pairs", "since", "until", "limit", "last_event_id"]),
    st.text(max_size=10),
)
encoded_query = st.lists(st.tuples(key, value), max_size=6).map(
    lambda kv: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kv)
)
raw_query = st.from_regex(r"[A-Za-z0-9%=&+;,._~*'()!$:@/?-]{0,60}", fullmatch=True)
header_text = st.one_of(
    number_like,
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40),
)


def _request(port: int, method: str, target: str, last_event_id: str | None, gzip: bool) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        if last_event_id is not None:
            conn.putheader("Last-Event-ID", last_event_id.encode())
        if gzip:
            conn.putheader("Accept-Encoding", "gzip, deflate, br")
        conn.endheaders()
        resp = conn.getresponse()
        stream = target.startswith("/api/price-stream")
        if stream:
            assert resp.getheader("Content-Encoding") is None, target
        if resp.status != 200 or not stream:
            resp.read()  # a stream answering 200 never ends: its headers are enough
        return resp.status
    finally:
        conn.close()


@PROPERTY
@given(
    query=st.one_of(encoded_query, raw_query),
    last_event_id=st.none() | header_text,
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    gzip=st.booleans(),
)
@example(query="limit=%C2%B2", last_event_id=None, method="GET", gzip=True)
@example(query="until=253402300800", last_event_id=None, method="GET", gzip=True)
@example(query="until=9223372036854775808", last_event_id=None, method="GET", gzip=True)
@example(query="until=1e30", last_event_id=None, method="GET", gzip=True)
@example(query="since=0001-01-01T00:00:00%2B23:59", last_event_id=None, method="GET", gzip=True)
@example(query="until=9999-12-31T23:59:59-23:59", last_event_id=None, method="GET", gzip=True)
@example(query="limit=" + "9" * 5000, last_event_id=None, method="GET", gzip=True)
@example(query="", last_event_id="²", method="GET", gzip=True)
@example(query="last_event_id=%D9%A1%D9%A2", last_event_id=None, method="GET", gzip=True)
@example(query="pairs=,,,", last_event_id=" ", method="GET", gzip=True)
@example(query="pair=%00&since=%FF%FE", last_event_id=None, method="GET", gzip=True)
def test_any_query_and_last_event_id_is_never_5xx(
    served: ServedApp, query: str, last_event_id: str | None, method: str, gzip: bool
) -> None:
    """Every endpoint, for any query string and Last-Event-ID, answers below 500, quietly.

    The event stream also never comes compressed, whatever the client accepts.
    """
    with captured_logs() as records:
        for path in ENDPOINTS:
            target = f"{path}?{query}" if query else path
            status = _request(served.port, method, target, last_event_id, gzip)
            assert 200 <= status < 500, (method, target, last_event_id, status)
    assert tracebacks(records) == []


# -- WebSocket messages ------------------------------------------------------------------

op_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "subscribe", "unsubscribe", 1])},
    optional={
        "pairs": st.one_of(
            st.lists(st.sampled_from([*PAIRS, "eth-usd", " BTC-USD", "XRP-USD"]), max_size=4),
            op_value,
        ),
        "last_event_id": st.one_of(st.integers(-2, 12), number_like, op_value),
    },
).map(json.dumps)
nested = st.integers(1, 4000).map(lambda n: "[" * n) | st.integers(1, 1300).map(
    lambda n: '{"a":' * n
)
text_messages = st.one_of(ops, nested, st.text(max_size=200), op_value.map(json.dumps))
messages = st.lists(
    st.one_of(
        text_messages.filter(lambda t: len(t.encode()) <= 4096),
        st.binary(max_size=4096),
    ),
    min_size=1,
    max_size=BURST + 3,
)


def _accepted_pairs(message: str | bytes) -> list[str]:
    """The pairs a message the server accepted asks for (the test's own reading of it)."""
    op = json.loads(message)
    pairs: list[str] = []
    for name in op.get("pairs", PAIRS):
        if name.strip().upper() not in pairs:
            pairs.append(name.strip().upper())
    return pairs


async def _converse(port: int, sent: list[str | bytes]) -> list[tuple[str, Any]]:
    """Send every message at once, then read one answer per message until the close."""
    answers: list[tuple[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}/api/ws?pairs=BTC-USD") as ws,
    ):
        opening = await ws.receive_json(timeout=5)
        assert opening["event"] in ("price", "status")
        while opening["event"] != "status":
            opening = await ws.receive_json(timeout=5)
        for message in sent:
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
        for message in sent[:BURST]:
            first = await ws.receive(timeout=5)
            assert first.type == WSMsgType.TEXT, (message, first)
            event = json.loads(first.data)
            if event["event"] == "error":
                answers.append(("error", event["data"]["detail"]))
                continue
            # An accepted op: its opening (prices, replay or resync) ends with one status per pair.
            pairs = _accepted_pairs(message)
            statuses = [event["data"]["pair"]] if event["event"] == "status" else []
            while len(statuses) < len(pairs):
                frame = json.loads((await ws.receive(timeout=5)).data)
                assert frame["event"] in ("price", "resync", "status"), frame
                if frame["event"] == "status":
                    statuses.append(frame["data"]["pair"])
            assert statuses == pairs, (message, statuses)
            answers.append(("change", pairs))
        if len(sent) > BURST:
            close = await ws.receive(timeout=5)
            assert close.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
            assert ws.close_code == 1008, (close, ws.close_code)
    return answers


@PROPERTY
@given(sent=messages)
@example(sent=["[" * 4000])
@example(sent=['{"op": "subscribe", "last_event_id": 1}'] * (BURST + 3))
@example(sent=['{"op": "subscribe", "pairs": [' + "[" * 2000 + "]" * 2000 + "]}"])
def test_any_ws_message_gets_an_error_or_a_change(
    served: ServedApp, sent: list[str | bytes]
) -> None:
    """Each message (up to the burst) gets one error event or one valid change; then 1008."""
    with captured_logs() as records:
        answers = asyncio.run(_converse(served.port, sent))
        assert len(answers) == min(len(sent), BURST)
        for (kind, detail), message in zip(answers, sent, strict=False):
            if kind == "change":
                assert set(detail) <= set(PAIRS), message
    assert tracebacks(records) == []
    assert served.run(_subscribers_left(served)) == 0


async def _subscribers_left(served: ServedApp) -> int:
    """Subscribers still attached once the server has seen the closed sockets (up to 5 s)."""
    for _ in range(500):
        if served.app[HUB].count == 0:
            break
        await asyncio.sleep(0.01)
    return served.app[HUB].count
