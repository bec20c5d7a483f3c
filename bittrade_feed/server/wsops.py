"""What a WebSocket client may send: the ``subscribe`` op, parsed and rate-limited.

A client message either becomes a new (pairs, resume point) or a ``Problem`` whose detail
goes back as an ``error`` event; nothing a client sends raises past the handler.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from bittrade_feed.server.params import check_pairs, parse_alerts_after, parse_event_id
from bittrade_feed.server.problems import Problem

OP_HINT = (
    'the only op is {"op": "subscribe", "pairs": [...], "last_event_id": N, "alerts_after": M}'
)


class Op(NamedTuple):
    """One ``subscribe`` op: pairs, price resume point, alert resume point (optional)."""

    pairs: tuple[str, ...]
    last_event_id: int | None
    alerts_after: int | None
    """``None``: the stream keeps its alert cursor (no alert repeated or lost)."""


def parse_op(text: str, known: tuple[str, ...]) -> Op:
    """One ``subscribe`` message, parsed; ``Problem`` if it is not one."""
    try:
        op = json.loads(text)
    except ValueError:
        raise Problem(400, "message is not JSON") from None
    except RecursionError:
        # Inside the 4 KiB limit, 2,000 nested brackets exhaust the parser's stack.
        raise Problem(400, "message is nested too deeply to be an op") from None
    if not isinstance(op, dict) or op.get("op") != "subscribe":
        raise Problem(400, OP_HINT)
    names = op.get("pairs", list(known))
    if not isinstance(names, list) or not names:
        raise Problem(400, "pairs must be a non-empty list of pair names", param="pairs")
    pairs = check_pairs(names, known, "pairs")
    resume = parse_event_id(op.get("last_event_id"), "last_event_id")
    return Op(pairs, resume, parse_alerts_after(op.get("alerts_after")))


def describe_limit(burst: int, rate: float) -> str:
    """The close reason sent to a client over its op limit (under 123 bytes)."""
    return f"too many messages: at most {burst} at once, then {rate:g} per second"


def json_error(detail: str) -> str:
    """The ``error`` event a client gets for a message it should not have sent."""
    data: dict[str, Any] = {"detail": detail}
    return json.dumps({"event": "error", "data": data})
