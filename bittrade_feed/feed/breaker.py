"""Each source's circuit breaker: shared by all its pairs, counting failed intervals.

Exchanges rate-limit per client, not per pair, so one breaker serves every pair a source
quotes. It counts failed intervals, not failed requests (three pairs failing in one
interval are one failure), rests the source with a doubling backoff or for its
``Retry-After``, and when a rest is over lets one probe request per cycle through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bittrade_feed.errors import SourceError, SourceGeoBlocked, SourceRateLimited

FAILURES_TO_OPEN = 3
"""Consecutive failed intervals before a source is rested (however many pairs it serves)."""
MAX_REST_INTERVALS = 32
"""The longest rest, in intervals; rests start at two intervals and double up to this."""


@dataclass(slots=True)
class SourceHealth:
    """One source's circuit breaker and what /api/sources reports about it."""

    name: str
    state: str = "closed"
    failures: int = 0
    rests: int = 0
    open_until: float = 0.0
    last_success: float | None = None
    last_error: float | None = None
    last_error_reason: str | None = None
    last_error_message: str | None = None
    failed_cycle: int | None = None
    """The cycle whose failure was last counted: one bad interval is one failure."""
    probe_cycle: int | None = None
    """The cycle a half-open probe went out in; the source's other pairs skip that cycle."""

    def allow(self, now: float, cycle: int) -> bool:
        """Whether to ask this source now; an elapsed rest lets one probe per cycle through."""
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
        if self.state == "half_open":
            if self.probe_cycle == cycle:
                return False
            # Keyed by cycle, not a flag: a probe cancelled mid-flight cannot block the next.
            self.probe_cycle = cycle
        return self.state in ("closed", "half_open")

    def probing(self, cycle: int) -> bool:
        """Whether this cycle's probe has gone out already."""
        return self.state == "half_open" and self.probe_cycle == cycle

    def succeeded(self, wall: float) -> None:
        """A valid quote closes the breaker and resets the backoff."""
        self.state, self.failures, self.rests = "closed", 0, 0
        self.last_success = wall

    def failed(
        self, err: SourceError, now: float, wall: float, interval: float, cycle: int
    ) -> None:
        """Count a failed interval; rest the source when it keeps failing or asks us to."""
        self.last_error, self.last_error_reason = wall, err.reason
        self.last_error_message = err.message
        if isinstance(err, SourceGeoBlocked):
            self.state = "disabled"
            return
        if cycle == self.failed_cycle:
            # Another pair's request failed in this same interval: already counted (and
            # already rested, if it came to that); only a longer Retry-After extends it.
            if self.state == "open" and isinstance(err, SourceRateLimited) and err.retry_after:
                self.open_until = max(self.open_until, now + err.retry_after)
            return
        self.failed_cycle = cycle
        self.failures += 1
        if isinstance(err, SourceRateLimited):
            self._rest(now, err.retry_after or interval * 2 ** min(self.rests, 5))
        elif self.state == "half_open" or self.failures >= FAILURES_TO_OPEN:
            self._rest(now, interval * min(2 ** (self.rests + 1), MAX_REST_INTERVALS))

    def reset(self) -> None:
        """Forget rests, failures and a geo-block (a reload); keep what /api/sources shows."""
        self.state, self.failures, self.rests, self.open_until = "closed", 0, 0, 0.0
        self.failed_cycle = self.probe_cycle = None

    def _rest(self, now: float, seconds: float) -> None:
        self.state = "open"
        self.open_until = now + seconds
        self.rests += 1

    def to_json(self) -> dict[str, Any]:
        """The /api/sources view (timestamps as epoch seconds, converted by the caller)."""
        return {
            "name": self.name,
            "state": self.state,
            "consecutive_failures": self.failures,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_error_reason": self.last_error_reason,
            "last_error_message": self.last_error_message,
        }
