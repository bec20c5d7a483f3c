"""Whether this daemon really receives the shared log: the cluster part of ``/readyz``.

A PING proves little (centrifugal/centrifugo#1189: a hub stayed green while delivering
nothing after a Sentinel failover). Three facts are checked instead, all from real traffic:
the lease round trip (a write on the primary, every quarter lease) succeeded recently; the
follower's blocking read returned recently; and the follower is not stuck behind the log
head that the lease round trip reported, so a follower reading a stale server shows up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Health:
    """Timestamps (monotonic seconds) of the last good round trips, and the log positions."""

    poll_window: float
    """A lease round trip older than this is a Redis outage."""
    read_window: float
    """A follower read older than this means the log is not reaching us."""
    lag_window: float
    """Behind the head for longer than this (without moving) means we are cut off."""
    last_poll_ok: float | None = None
    last_poll_error: str = ""
    last_read_ok: float | None = None
    last_read_error: str = ""
    apply_error: str = ""
    head: int = 0
    """The newest id in the shared log, as the last lease round trip saw it."""
    position: int = 0
    """The newest id committed here from the log."""
    behind_since: float | None = None

    def poll_ok(self, now: float, head: int) -> None:
        """A lease round trip succeeded and saw ``head`` as the log's newest id."""
        self.last_poll_ok, self.last_poll_error, self.head = now, "", head
        self._track_lag(now)

    def applied(self, now: float, position: int) -> None:
        """The follower committed up to ``position``."""
        self.position, self.apply_error = position, ""
        self._track_lag(now)

    def _track_lag(self, now: float) -> None:
        if self.position >= self.head:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = now

    @property
    def lag_ids(self) -> int:
        """How many ids the log has that this daemon has not committed yet."""
        return max(0, self.head - self.position)

    def checks(self, now: float) -> dict[str, dict[str, Any]]:
        """The ``/readyz`` entries: Redis round trips, and receiving the log."""
        return {"cluster:redis": self._redis(now), "cluster:log": self._log(now)}

    def ready(self, now: float) -> bool:
        """Whether every cluster check passes."""
        return all(c["ok"] for c in self.checks(now).values())

    def _redis(self, now: float) -> dict[str, Any]:
        if self.last_poll_ok is None:
            return {"ok": False, "detail": f"no answer from Redis yet {self.last_poll_error}"}
        age = now - self.last_poll_ok
        if age > self.poll_window:
            why = f": {self.last_poll_error}" if self.last_poll_error else ""
            return {"ok": False, "detail": f"no answer from Redis for {age:.1f} s{why}"}
        return {"ok": True, "detail": f"lease round trip {age:.1f} s ago"}

    def _log(self, now: float) -> dict[str, Any]:
        if self.apply_error:
            return {"ok": False, "detail": f"cannot commit the shared log: {self.apply_error}"}
        if self.last_read_ok is None or now - self.last_read_ok > self.read_window:
            age = "never" if self.last_read_ok is None else f"{now - self.last_read_ok:.1f} s ago"
            why = f" ({self.last_read_error})" if self.last_read_error else ""
            return {"ok": False, "detail": f"last read of the shared log: {age}{why}"}
        if self.behind_since is not None and now - self.behind_since > self.lag_window:
            return {
                "ok": False,
                "detail": f"{self.lag_ids} id(s) behind the shared log for "
                f"{now - self.behind_since:.1f} s (at {self.position}, head {self.head})",
            }
        return {"ok": True, "detail": f"at {self.position}, head {self.head}"}
