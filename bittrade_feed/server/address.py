"""The client's address: the socket peer, or what the trusted proxies in front say it is.

A header naming the client is believed only when the socket peer is listed in
``server.trusted_proxies``, and then only as far as the chain of trusted hops goes: the
header is read from the right (each proxy appends the address it saw), trusted entries
are skipped, and the first untrusted one is the client. Whatever a client writes into the
header itself sits to the left of that and is never reached. A malformed entry (or one
that is no address, like ``unknown`` or an obfuscated ``_hidden``) where the walk needs an
address gives the peer: never a 500, never an address the client chose.

Why not aiohttp-remotes: its strict middlewares answer a malformed header with 400 and
replace the request object in an awaiting middleware (a suspended frame per stream);
the limits need only this one synchronous, side-effect-free function.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from bittrade_feed.config_checks import IPNetwork
from bittrade_feed.server.state import CONFIG

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 64
"""Entries read from the right at most: a header of thousands costs no more than this."""


def client_address(request: web.Request) -> str:
    """The address limits count and logs name for ``request`` ("" for a Unix socket peer)."""
    peer = request.remote or ""
    config = request.app.get(CONFIG)
    if config is None or not config.server.trusted_proxies:
        return peer
    server = config.server
    if server.proxy_header == "forwarded":
        hops = forwarded_hops(request.headers.getall("Forwarded", []))
    else:
        hops = xff_hops(request.headers.getall("X-Forwarded-For", []))
    return pick_client(peer, hops, server.trusted_proxies)


def pick_client(peer: str, hops: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The client in ``hops`` (header entries left to right, as sent) behind ``peer``.

    Only the entries the walk from the right reaches are parsed, so junk a client put
    in front cannot turn it into the proxy's address (and take the proxy's share of the
    per-address limit). The result is always ``peer``, or an entry that is not trusted,
    or (every hop trusted) the leftmost entry.
    """
    peer_ip = parse_ip(peer)
    if peer_ip is None or not is_trusted(peer_ip, trusted) or not hops:
        return peer
    leftmost = peer
    for entry in reversed(hops[-MAX_HOPS:]):
        ip = parse_ip(entry)
        if ip is None:
            return peer
        if not is_trusted(ip, trusted):
            return str(ip)
        leftmost = str(ip)
    return leftmost


def is_trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    """Whether ``ip`` (IPv4-mapped IPv6 unwrapped) is inside a trusted network."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header entry: bare, ``[v6]``, ``[v6]:port`` or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not _is_port(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdigit()


def xff_hops(headers: Sequence[str]) -> list[str]:
    """The ``X-Forwarded-For`` entries, left to right over every such header line."""
    return [entry.strip() for line in headers for entry in line.split(",")]


def forwarded_hops(headers: Sequence[str]) -> list[str]:
    """The ``for=`` of each RFC 7239 ``Forwarded`` element ("" for an element without one).

    Elements are split at every comma, even a quoted one: that can only garble entries
    a client wrote, to the left of the ones the trusted proxies appended.
    """
    hops: list[str] = []
    for line in headers:
        for element in line.split(","):
            found = ""
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    found = _unquote(value.strip())
            hops.append(found)
    return hops


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value
