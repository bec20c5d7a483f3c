"""Every exception this package raises, in one tree.

::

    FeedError               base: the subscription ended with an error
    ├── RequestRejected     a 4xx answer: the request is wrong (unknown pair, bad URL);
    │   │                   .status and the daemon's .detail say what to fix
    │   └── Unauthorized    401 or 403: the token is missing, wrong or not allowed
    ├── ProtocolError       not an event stream (a 200 of another type, an odd status);
    │                       per the EventSource rules the client gives up instead of retrying
    └── GaveUp              ``max_attempts`` connections in a row failed; the last
                            failure is its ``__cause__``

Network errors, timeouts and 5xx answers are not raised: the client reconnects. A 204
answer is the daemon's way to say "stop": iteration ends without an error.
"""

from __future__ import annotations


class FeedError(Exception):
    """The subscription ended with an error; reconnecting would not help."""


class RequestRejected(FeedError):
    """The daemon refused the request with a 4xx answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class Unauthorized(RequestRejected):
    """401 or 403: check the token."""


class ProtocolError(FeedError):
    """The answer is not an event stream."""


class GaveUp(FeedError):
    """Too many connection attempts in a row failed (see ``max_attempts``)."""
