"""Every exception this package raises, in one tree.

::

    FeedError               base: the subscription ended with an error
    ├── RequestRejected     a 4xx answer: the request is wrong (unknown pair, bad URL);
    │   │                   .status and the daemon's .detail say what to fix
    │   └── Unauthorized    401 or 403: the credential is missing, wrong or not allowed
    │       ├── AuthError       401: no credential, or one the daemon does not accept
    │       │                   (also: the ``token_provider`` failed or gave nothing)
    │       └── ForbiddenError  403: valid, but not for these pairs or this endpoint;
    │                           ``.pairs`` names the refused pairs
    ├── ProtocolError       not an event stream (a 200 of another type, an odd status);
    │                       per the EventSource rules the client gives up instead of retrying
    ├── GaveUp              ``max_attempts`` connections in a row failed; the last
    │                       failure is its ``__cause__``
    └── ServiceError        ``AlertsAPI`` only: a 5xx answer, or none (network error,
                            timeout); try again later (``.retry_after`` when given)

A problem answer's ``field`` (the request value to fix, e.g. ``level``) is the error's
``.field``. Network errors, timeouts and 5xx answers to the stream are not raised: the
client reconnects. A 204
answer is the daemon's way to say "stop": iteration ends without an error. A 401 is
retried once, with a fresh token, only when a ``token_provider`` is given; a 403 never.
"""

from __future__ import annotations


class FeedError(Exception):
    """The subscription ended with an error; reconnecting would not help."""


class RequestRejected(FeedError):
    """The daemon refused the request with a 4xx answer."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.field = field
        """The request field the daemon names as wrong (``None`` if it names none)."""


class Unauthorized(RequestRejected):
    """401 or 403: check the credential (catch this for both)."""


class AuthError(Unauthorized):
    """401: the daemon wants a (valid) credential; ``.detail`` says what was wrong."""

    def __init__(self, detail: str, status: int = 401) -> None:
        super().__init__(status, detail)


class ForbiddenError(Unauthorized):
    """403: the credential is valid but may not read what was asked.

    ``pairs`` are the refused pairs when the daemon names them (else empty).
    """

    def __init__(self, detail: str, pairs: tuple[str, ...] = ()) -> None:
        super().__init__(403, detail)
        self.pairs = pairs


class ProtocolError(FeedError):
    """The answer is not an event stream."""


class GaveUp(FeedError):
    """Too many connection attempts in a row failed (see ``max_attempts``)."""


class ServiceError(FeedError):
    """An ``AlertsAPI`` call got a 5xx answer, or no answer; the request may be retried.

    ``status`` is ``None`` when no answer came (the network error is the ``__cause__``).
    """

    def __init__(self, status: int | None, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail if status is None else f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
