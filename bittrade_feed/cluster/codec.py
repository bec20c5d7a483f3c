"""A tick as the fields of one stream entry, and back."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from bittrade_feed.models import Tick, TickDraft


class BadEntry(ValueError):
    """A stream entry that is not a tick this daemon wrote."""


def encode(draft: TickDraft) -> list[str]:
    """Field, value, field, value ... for the publish script (the epoch is added there)."""
    return [
        "p",
        draft.pair,
        "v",
        str(draft.price),
        "t",
        str(draft.ts_ms),
        "s",
        ",".join(draft.sources),
    ]


def decode(seq: int, fields: Mapping[str, str]) -> tuple[Tick, str]:
    """The tick with id ``seq`` and the epoch it was written in."""
    try:
        price = Decimal(fields["v"])
        tick = Tick(seq, fields["p"], price, int(fields["t"]), tuple(fields["s"].split(",")))
        epoch = fields["e"]
    except (KeyError, ValueError, InvalidOperation) as exc:
        raise BadEntry(f"entry {seq}-0 is not a tick: {exc!r}") from None
    if not price.is_finite() or price <= 0:
        raise BadEntry(f"entry {seq}-0 has price {fields['v']!r}")
    return tick, epoch


def draft_tick(seq: int, draft: TickDraft) -> Tick:
    """The tick a publish created, as the fetch loop's sink returns it."""
    return Tick(seq, draft.pair, draft.price, draft.ts_ms, draft.sources)
