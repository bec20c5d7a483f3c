"""Admission limits: per client address and per credential, and new streams per address.

Everything here is synchronous and runs inside ``Registry.admit``, before the handler's
first await, so no other connection can slip between a check and its count. Addresses
are grouped first: an IPv6 client usually holds a whole /64, so counting single IPv6
addresses would let one host open streams from 2**64 of them; an IPv4-mapped IPv6 peer
(``::ffff:192.0.2.1``, a dual-stack listener) is the IPv4 client it wraps.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable

IPV6_GROUP_PREFIX = 64


class Limited(Exception):
    """A per-address, per-credential or rate limit refused a stream (answered 429)."""

    def __init__(self, limit: str, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.limit = limit
        """``address``, ``rate`` or ``credential`` (the refusal metric's reason)."""
        self.retry_after = retry_after
        """Seconds the client should wait (the ``Retry-After`` header)."""
        self.detail = detail
        """What the client is told: the limit, its config key, never a credential."""


def address_group(address: str) -> str:
    """The unit a per-address limit counts: the IPv4 address, or the IPv6 /64.

    Anything that is not an IP address (a Unix socket peer, "") is its own group.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # The scope (fe80::1%eth0) names an interface, not a host: it is dropped.
        net = ipaddress.IPv6Network((int(ip) >> 64 << 64, IPV6_GROUP_PREFIX))
        return str(net)
    return str(ip)


class TokenBucket:
    """Allows a burst of ``burst`` takes, then ``rate`` per second on average."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def refill(self) -> float:
        """Bring the tokens up to now; the tokens there are."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self) -> bool:
        """Spend one token if there is one; ``False`` means the caller is over its limit."""
        if self.refill() < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next token (0 if one is there now)."""
        return max(0.0, (1 - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (then it is the same as a new one)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class ConnectRate:
    """One token bucket per address group, for new streams.

    A bucket that has refilled completely behaves exactly like a new one, so such buckets
    are dropped by a sweep that runs at most once per refill period (``burst / rate``):
    the dict holds only groups that opened a stream within about two periods, never every
    address ever seen.
    """

    __slots__ = ("buckets", "burst", "clock", "next_sweep", "period", "rate")

    def __init__(self, burst: int, rate: float, clock: Callable[[], float]) -> None:
        self.burst = burst
        self.rate = rate
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self.period = burst / rate
        self.next_sweep = clock() + self.period

    def take(self, group: str) -> int:
        """0 if ``group`` may open a stream now (a token is spent), else whole seconds to wait."""
        now = self.clock()
        if now >= self.next_sweep:
            self.sweep(now)
        bucket = self.buckets.get(group)
        if bucket is None:
            bucket = self.buckets[group] = TokenBucket(self.burst, self.rate, self.clock)
        if bucket.take():
            return 0
        return max(1, math.ceil(bucket.wait()))

    def sweep(self, now: float) -> None:
        """Forget the buckets that are full again."""
        self.buckets = {g: b for g, b in self.buckets.items() if not b.full(now)}
        self.next_sweep = now + self.period

    def __len__(self) -> int:
        return len(self.buckets)
