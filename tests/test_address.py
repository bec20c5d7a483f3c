"""The client address behind trusted proxies (issue 13): ``server/address.py``."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable

import pytest
from aiohttp.pytest_plugin import AiohttpClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bittrade_feed.config import Config
from bittrade_feed.server.address import (
    forwarded_hops,
    is_trusted,
    parse_ip,
    pick_client,
    xff_hops,
)
from bittrade_feed.server.app import create_app
from bittrade_feed.server.state import HUB
from tests.test_limits import until
from tests.test_streams import sim_config

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48"))


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # untrusted peer: header ignored
        ("10.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.1", "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the client's own is left
        ("10.0.0.1", "203.0.113.9, 10.0.0.7", "203.0.113.9"),  # trusted hops skipped
        ("10.0.0.1", "10.0.0.9, 10.0.0.7", "10.0.0.9"),  # all trusted: the leftmost
        ("10.0.0.1", "junk, 203.0.113.9", "203.0.113.9"),  # junk never reached
        ("10.0.0.1", "203.0.113.9, junk", "10.0.0.1"),  # junk reached: the peer
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9:4711", "203.0.113.9"),
        ("10.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
        ("::ffff:10.0.0.1", "203.0.113.9", "203.0.113.9"),  # a mapped peer is its IPv4
        ("", "203.0.113.9", ""),  # a Unix socket peer is never a trusted proxy
    ],
)
def test_x_forwarded_for(peer: str, header: str, client: str) -> None:
    """Read from the right, trusted hops skipped, malformed where needed: the peer."""
    assert pick_client(peer, xff_hops([header]), TRUSTED) == client


def test_xff_over_several_header_lines() -> None:
    """Repeated X-Forwarded-For lines are one list, in order."""
    assert xff_hops(["198.51.100.1, 203.0.113.9", "10.0.0.7"]) == [
        "198.51.100.1",
        "203.0.113.9",
        "10.0.0.7",
    ]


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ('for=203.0.113.9;proto=https, for="10.0.0.7"', "203.0.113.9"),
        ('for="[2001:db8::1]:4711"', "2001:db8::1"),
        ("for=_hidden", "10.0.0.1"),  # obfuscated where the walk needs an address
        ("for=unknown, for=203.0.113.9", "203.0.113.9"),
        ('for="bad,one", for=203.0.113.9', "203.0.113.9"),  # a client's garbled part
        ("proto=https", "10.0.0.1"),  # an element without for=
        ("by=10.0.0.1;For=203.0.113.9", "203.0.113.9"),  # names are case-insensitive
    ],
)
def test_forwarded(header: str, client: str) -> None:
    """RFC 7239 ``for=``: quoted, bracketed, obfuscated and unknown values."""
    assert pick_client("10.0.0.1", forwarded_hops([header]), TRUSTED) == client


entries = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.5", "10.9.9.9", "2001:db8:ffff::1", "::ffff:10.1.1.1"]),
    st.text(max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(
    peer=st.one_of(st.sampled_from(["10.0.0.1", "192.0.2.1", ""]), st.ip_addresses().map(str)),
    hops=st.lists(entries, max_size=8),
)
def test_result_is_the_peer_or_an_untrusted_header_address(peer: str, hops: list[str]) -> None:
    """Always the peer, or a header address that is not trusted, or (every hop trusted)
    the leftmost hop; from an untrusted peer, always the peer."""
    got = pick_client(peer, hops, TRUSTED)
    peer_ip = parse_ip(peer)
    if peer_ip is None or not is_trusted(peer_ip, TRUSTED):
        assert got == peer
        return
    if got == peer:
        return
    parsed = [parse_ip(h) for h in hops]
    assert got in {str(ip) for ip in parsed if ip is not None}
    got_ip = parse_ip(got)
    assert got_ip is not None
    if is_trusted(got_ip, TRUSTED):  # only when every hop is trusted, and then the leftmost
        assert all(ip is not None and is_trusted(ip, TRUSTED) for ip in parsed)
        assert got == str(parsed[0])
    else:  # and every hop right of it is trusted
        right = parsed[len(parsed) - 1 - [str(ip) for ip in reversed(parsed)].index(got) + 1 :]
        assert all(ip is not None and is_trusted(ip, TRUSTED) for ip in right)


@pytest.mark.parametrize(
    ("trusted", "first", "second", "status", "named"),
    [
        # Untrusted peer: the spoofed header is ignored, both count as 127.0.0.1.
        ([], "203.0.113.1", "203.0.113.2", 429, "127.0.0.1"),
        # Trusted peer: two different clients behind it pass ...
        (["127.0.0.1"], "203.0.113.1", "203.0.113.2", 200, ""),
        # ... and one client twice is limited by its own address.
        (["127.0.0.0/8"], "203.0.113.1", "203.0.113.1", 429, "203.0.113.1"),
    ],
)
async def test_spoofed_header_ignored_unless_the_peer_is_trusted(
    aiohttp_client: AiohttpClient,
    daemon_config: Callable[..., Config],
    trusted: list[str],
    first: str,
    second: str,
    status: int,
    named: str,
) -> None:
    """With one stream per address, X-Forwarded-For decides only behind a trusted proxy."""
    config = sim_config(
        daemon_config, server={"trusted_proxies": trusted}, stream={"max_per_address": 1}
    )
    client = await aiohttp_client(create_app(config, fetch=False))
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            client.get("/api/price-stream", headers={"X-Forwarded-For": first})
        )
        assert one.status == 200
        two = await stack.enter_async_context(
            client.get("/api/price-stream", headers={"X-Forwarded-For": second})
        )
        assert two.status == status
        if named:
            assert f"open from {named} " in (await two.json())["detail"]
    await until(lambda: client.app[HUB].admitted == 0)


async def test_forwarded_header_only_when_configured(
    aiohttp_client: AiohttpClient, daemon_config: Callable[..., Config]
) -> None:
    """With proxy_header "forwarded", X-Forwarded-For is not read (and vice versa)."""
    config = sim_config(
        daemon_config,
        server={"trusted_proxies": ["127.0.0.1"], "proxy_header": "forwarded"},
        stream={"max_per_address": 1},
    )
    client = await aiohttp_client(create_app(config, fetch=False))
    async with contextlib.AsyncExitStack() as stack:
        one = await stack.enter_async_context(
            client.get("/api/price-stream", headers={"Forwarded": "for=203.0.113.1"})
        )
        assert one.status == 200
        two = await stack.enter_async_context(
            client.get(
                "/api/price-stream",
                headers={"Forwarded": "for=203.0.113.1", "X-Forwarded-For": "198.51.100.1"},
            )
        )
        assert two.status == 429
        assert "from 203.0.113.1 " in (await two.json())["detail"]
