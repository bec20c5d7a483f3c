"""Stream tickets: single-use, 30-second query parameters for clients that can send
neither a header nor a cookie (``POST /api/stream-ticket``, then ``?ticket=``).

A ticket is random and lives only in this daemon's memory: in a cluster it is redeemed
on the node that issued it. It is spent on first use, so one copied out of a log or a
proxy's history is already worthless.
"""

from __future__ import annotations

import secrets

from bittrade_feed.auth.principal import AuthFailure, Principal

TICKET_TTL = 30
MAX_TICKETS = 10_000
"""Outstanding tickets kept at most; past that an issue is refused (memory stays bounded)."""


class TicketBook:
    """Outstanding tickets and what each stands for."""

    def __init__(self, ttl: float = TICKET_TTL, limit: int = MAX_TICKETS) -> None:
        self.ttl = ttl
        self.limit = limit
        self._open: dict[str, tuple[Principal, float]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, principal: Principal, now: float) -> str | None:
        """A new ticket for ``principal``, valid until ``now + ttl`` (monotonic); ``None``
        when ``limit`` tickets are outstanding."""
        if len(self._open) >= self.limit:
            self._prune(now)
            if len(self._open) >= self.limit:
                return None
        ticket = secrets.token_urlsafe(24)
        self._open[ticket] = (principal, now + self.ttl)
        return ticket

    def redeem(self, ticket: str, now: float) -> Principal:
        """The principal of a ticket, which is spent; ``AuthFailure`` if unknown or late."""
        entry = self._open.pop(ticket, None)
        if entry is None or now >= entry[1]:
            raise AuthFailure(
                "bad_ticket",
                "stream ticket is unknown, already used or expired (they last "
                f"{self.ttl:g} s; get a new one: POST /api/stream-ticket)",
            )
        return entry[0]

    def _prune(self, now: float) -> None:
        self._open = {t: e for t, e in self._open.items() if now < e[1]}
