"""The stream promise as one checker: what one subscriber received versus what SQLite holds."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from bittrade_feed.store.sqlite import Store

Received = tuple[str | None, str | None, Any]
"""One event as ``tests.streamutil.parse`` gives it: (id, event, data)."""


def check_stream(
    received: Iterable[Received],
    stored: Mapping[int, Mapping[str, Any]],
    pairs: Collection[str],
    resume_from: int | None = None,
) -> list[int]:
    """Assert the stream promise for one subscriber; return the price ids it received.

    ``received`` is every event of the subscriber in arrival order (SSE frames parsed by
    ``streamutil.parse``; WebSocket messages as ``(str(data.get("id")), event, data)``;
    comments and ``status`` events are skipped). ``stored`` maps each id in SQLite to its
    tick's wire JSON (``stored_ticks``), ``pairs`` are the subscribed pairs, and
    ``resume_from`` the ``Last-Event-ID`` the stream opened with (``None``: it opened
    with the snapshot, whose first price of each pair may be any stored one).

    Checked:
    - ids strictly increase (a ``resync`` may repeat the last id, never go below it);
    - every price is of a subscribed pair, and its id is in SQLite with the same payload,
      as is every tick inside a ``resync``;
    - no gap without a ``resync`` before it: between two prices of a pair (or the
      resume point and its first price) SQLite holds no other id of that pair, unless a
      ``resync`` came in between, which restarts the check at its snapshot.
    """
    by_pair: dict[str, list[int]] = {}
    for ident, payload in stored.items():
        by_pair.setdefault(str(payload["pair"]), []).append(ident)
    last_of: dict[str, int | None] = dict.fromkeys(pairs, resume_from)
    last = resume_from or 0
    prices: list[int] = []
    for n, (raw_id, event, data) in enumerate(received):
        where = f"event #{n} ({event} id={raw_id})"
        if event == "price":
            ident = int(str(raw_id))
            assert ident > last, f"{where}: id not above the previous {last}"
            _check_stored(ident, data, stored, pairs, where)
            before = last_of[data["pair"]]
            if before is not None:
                missed = [i for i in by_pair.get(data["pair"], ()) if before < i < ident]
                assert not missed, f"{where}: stored ids {missed} skipped without a resync"
            last_of[data["pair"]] = last = ident
            prices.append(ident)
        elif event == "resync":
            ident = int(raw_id) if raw_id else 0
            assert ident >= last, f"{where}: resync id below the previous {last}"
            latest = {}
            for tick in data["ticks"]:
                _check_stored(int(tick["id"]), tick, stored, pairs, where)
                latest[tick["pair"]] = int(tick["id"])
            for pair in pairs:
                last_of[pair] = latest.get(pair, ident or None)
            last = max(last, ident)
    return prices


def _check_stored(
    ident: int,
    data: Mapping[str, Any],
    stored: Mapping[int, Mapping[str, Any]],
    pairs: Collection[str],
    where: str,
) -> None:
    assert data["pair"] in pairs, f"{where}: pair {data['pair']} was not subscribed"
    assert ident in stored, f"{where}: id {ident} is not in SQLite"
    assert dict(stored[ident]) == dict(data), f"{where}: {data} differs from SQLite {stored[ident]}"


async def stored_ticks(path: Path) -> dict[int, dict[str, Any]]:
    """Every tick in the database at ``path``, by id, in its wire JSON form."""
    store = await Store.open(path)
    try:
        return {t.id: t.to_json() for t in await store.recent(2**62)}
    finally:
        await store.close()
