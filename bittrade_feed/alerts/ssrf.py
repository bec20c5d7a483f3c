"""Webhook URLs may only reach the public internet, unless an allow-list says otherwise.

A webhook URL is the caller's choice, and the daemon sends it requests from inside the
operator's network: without a guard, ``https://169.254.169.254/`` reads cloud metadata
and ``https://localhost:8080/`` reaches the daemon's own admin endpoints. So:

- ``check_url`` when a URL is given: https only (http if the policy allows it), no
  user:password, a host; an IP literal (in any notation ``socket.inet_aton`` accepts:
  ``2130706433``, ``0x7f.1``, ``127.1``) is checked at once.
- ``GuardedResolver`` at connect time: every address a name resolves to is checked, and
  one bad answer refuses the name, so DNS rebinding (a name that was public when it was
  checked and is loopback when connected) cannot slip through: the addresses checked are
  the addresses connected to. IP literals never reach a resolver, which is why
  ``check_url`` must run before every request (``guarded_session`` users call it).
- An address is allowed when, after unwrapping IPv4-mapped (``::ffff:127.0.0.1``) and
  IPv4-compatible IPv6, it is globally routable and in none of the extra blocked ranges
  (shared 100.64/10, this-network 0/8, and the metadata addresses), or when an allow-list
  network contains it.
- Sessions never follow redirects (a 3xx is a failed delivery; following one would open
  the guard again) and never read proxy settings from the environment.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # carrier-grade NAT, often the cloud's internal network
        "169.254.0.0/16",  # link-local, including 169.254.169.254 (cloud metadata)
        "fd00:ec2::/32",  # AWS's IPv6 metadata endpoint range
        "64:ff9b:1::/48",  # local-use NAT64: may translate to private IPv4
    )
)


class Refused(Exception):
    """A webhook URL or address the policy does not allow; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Policy:
    """What webhook URLs may reach."""

    allow_http: bool = False
    """Plain http (tests, or a receiver on a trusted network)."""
    allow: tuple[Network, ...] = ()
    """Networks allowed even though they are not public (e.g. ``127.0.0.1/32`` in tests)."""

    @classmethod
    def of(cls, *, allow_http: bool = False, allow: Iterable[str] = ()) -> Policy:
        """A policy from the config's strings (``ValueError`` for a bad network)."""
        return cls(allow_http, tuple(ipaddress.ip_network(n, strict=False) for n in allow))


def unwrap(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped or IPv4-compatible IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        packed = address.packed
        if packed[:12] == bytes(12) and int(address) > 1:
            return ipaddress.IPv4Address(packed[12:])  # ::a.b.c.d, deprecated but routed
    return address


def check_address(address: Address, policy: Policy) -> None:
    """``Refused`` unless ``address`` may be connected to."""
    plain = unwrap(address)
    if any(plain in network for network in policy.allow if network.version == plain.version):
        return
    if not plain.is_global or any(
        plain in network for network in BLOCKED if network.version == plain.version
    ):
        raise Refused(f"{address} is not a public address (loopback, private or reserved)")


def ip_literal(host: str) -> Address | None:
    """The address a URL host names directly, in any notation, or ``None`` for a name."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    try:
        # inet_aton takes the legacy forms getaddrinfo would resolve: 2130706433, 127.1.
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def check_url(raw: str, policy: Policy) -> URL:
    """The parsed URL if the policy allows it; ``Refused`` naming the reason."""
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise Refused("is not a URL") from None
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if url.scheme not in allowed:
        raise Refused(f"must be an {' or '.join(allowed)} URL")
    if url.raw_user is not None or url.raw_password is not None:
        raise Refused("must not carry a user name or password")
    host = url.raw_host
    if not host:
        raise Refused("names no host")
    literal = ip_literal(host)
    if literal is not None:
        check_address(literal, policy)
    return url


class GuardedResolver(AbstractResolver):
    """Resolves with getaddrinfo and refuses a name if any of its addresses is refused."""

    def __init__(self, policy: Policy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every address of ``host``, each checked; ``Refused`` for the first bad one."""
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                address = ipaddress.ip_address(result["host"])
            except ValueError:
                raise Refused(f"{host} resolved to {result['host']!r}, not an address") from None
            try:
                check_address(address, self._policy)
            except Refused as exc:
                raise Refused(f"{host} resolves to {exc.reason}") from None
        return results

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def guarded_session(policy: Policy, *, timeout: float, user_agent: str) -> aiohttp.ClientSession:
    """A session for webhook deliveries: guarded resolver, no DNS cache, no env proxies."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(policy),
        use_dns_cache=False,  # a cached answer would skip the check on the next connect
        limit=64,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": user_agent},
    )
