"""Every error the daemon raises on purpose, in one tree.

::

    FeedError
    ├── ConfigError            bad config file; lists every bad key (exit 78)
    ├── StoreError             the database refused a read or a write
    │   ├── StoreTimeout           no answer within database.timeout (outcome unknown)
    │   └── StoreRejected          the database works, but this tick cannot go in
    │       ├── StoreConflict          its id is already stored with another payload
    │       └── StoreOutOfOrder        its id is at or below one already handed on
    └── SourceError            one exchange did not give us a usable quote
        ├── SourceTimeout          no answer within the request timeout    (retryable)
        ├── SourceUnavailable      connection failed, HTTP 5xx, or the request failed
        │                          in a way nobody foresaw                 (retryable)
        ├── SourceHTTPError        any other non-200 status
        ├── SourceRateLimited      HTTP 429 / exchange "rate limit"; rests the source
        │                          (Retry-After honoured up to an hour)
        ├── SourceGeoBlocked       HTTP 451; disables the source until restart/reload
        ├── SourceBadBody          HTML page, not JSON, nested too deeply, a number out
        │                          of range, missing field, error inside a 200, or any
        │                          other unforeseen failure reading the answer
        ├── SourceWrongPair        the exchange echoed back another instrument
        └── SourceRejectedPrice    price not positive/finite, out of bounds (>= 1e15,
                                   over 18 significant digits or decimal places),
                                   quote too old or in the future

Every exception a source's fetch-and-parse raises is one of these: ``Source.fetch``
maps anything else at one boundary, so an odd answer costs that source one cycle.

``SourceError.reason`` is a short fixed word, safe as a Prometheus label value.
"""

from __future__ import annotations

from collections.abc import Sequence


class FeedError(Exception):
    """Base of every error bittrade-feed raises deliberately."""


class ConfigError(FeedError):
    """The configuration is invalid; ``details`` holds one (key, problem) per fault."""

    def __init__(self, details: Sequence[tuple[str, str]]) -> None:
        self.details = tuple(details)
        super().__init__("; ".join(f"{key}: {problem}" for key, problem in self.details))


class StoreError(FeedError):
    """The price database failed a read or a write."""


class StoreTimeout(StoreError):
    """The database did not answer within ``database.timeout``; a write may still land."""


class StoreRejected(StoreError):
    """The database works, but refuses this one tick (not a sign of a failing store)."""


class StoreConflict(StoreRejected):
    """A tick arrived under an id the database already holds with a different payload."""

    def __init__(self, tick_id: int, stored: str, offered: str) -> None:
        self.tick_id = tick_id
        self.stored = stored
        self.offered = offered
        super().__init__(f"tick id {tick_id} is stored as {stored} but arrived as {offered}")


class StoreOutOfOrder(StoreRejected):
    """A tick arrived under an id at or below the last one handed on, and is not stored."""

    def __init__(self, tick_id: int, last_id: int) -> None:
        self.tick_id = tick_id
        self.last_id = last_id
        super().__init__(
            f"tick id {tick_id} arrived after id {last_id} was handed on; "
            "ids must arrive in increasing order"
        )


MAX_MESSAGE = 300
"""Characters a source error's message keeps: it is one log line and one /api/sources field."""


class SourceError(FeedError):
    """One exchange request produced no usable quote."""

    reason = "error"
    retryable = False

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        # The message may quote the exchange's answer; a hostile one must not bloat the log.
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        self.message = message
        super().__init__(f"{source}: {message}")


class SourceTimeout(SourceError):
    """The exchange did not answer within the request timeout."""

    reason = "timeout"
    retryable = True


class SourceUnavailable(SourceError):
    """The connection failed or the exchange answered with a 5xx status."""

    reason = "unavailable"
    retryable = True


class SourceHTTPError(SourceError):
    """The exchange answered with a non-200 status that retrying will not fix."""

    reason = "http_error"

    def __init__(self, source: str, message: str, status: int) -> None:
        self.status = status
        super().__init__(source, message)


class SourceRateLimited(SourceError):
    """The exchange says we ask too often; ``retry_after`` is in seconds, if given."""

    reason = "rate_limited"

    def __init__(self, source: str, message: str, retry_after: float | None) -> None:
        self.retry_after = retry_after
        super().__init__(source, message)


class SourceGeoBlocked(SourceError):
    """The exchange refuses this location (HTTP 451); asking again will not help."""

    reason = "geo_blocked"


class SourceBadBody(SourceError):
    """The body is not the JSON we expect (HTML page, garbage, error field, missing field)."""

    reason = "bad_body"

    def __init__(self, source: str, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(source, message)


class SourceWrongPair(SourceError):
    """The exchange answered for another instrument than the one asked for."""

    reason = "wrong_pair"


class SourceRejectedPrice(SourceError):
    """The quote parsed, but its price or timestamp cannot be trusted."""

    reason = "rejected_price"


SOURCE_ERROR_REASONS: tuple[str, ...] = (
    SourceTimeout.reason,
    SourceUnavailable.reason,
    SourceHTTPError.reason,
    SourceRateLimited.reason,
    SourceGeoBlocked.reason,
    SourceBadBody.reason,
    SourceWrongPair.reason,
    SourceRejectedPrice.reason,
)
