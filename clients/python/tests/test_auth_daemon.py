"""FeedClient against the real daemon with ``[auth]`` on: keys from the daemon's key file,
its own 401/403 problems, and a ``reauth`` at a key's expiry resumed with the next key."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bittrade_feed_client import AuthError, FeedClient, ForbiddenError, State, Tick

from bittrade_feed.auth.keys import KeyRecord, KeyStore, new_key, write_key_file
from bittrade_feed.auth.scopes import parse_scopes

WAIT = 5.0
"""Upper bound for anything that should happen at once; tests finish long before."""


def make_key(scope: str, expires: float | None = None, *others: KeyRecord) -> tuple[str, KeyRecord]:
    """A new key (shown once) and its key-file row."""
    return new_key(KeyStore(others), parse_scopes(scope), expires, "client test", time.time())


async def auth_daemon(
    factory: Callable[..., Awaitable[Any]], path: Path, *records: KeyRecord
) -> Any:
    """The daemon with auth on and ``records`` in its key file, one price stored."""
    write_key_file(path, list(records))
    daemon = await factory(auth={"enabled": True, "key_file": str(path)})
    await daemon.tick("73380.5")
    return daemon


async def test_without_credential_the_daemon_401_is_auth_error(daemon_factory, tmp_path) -> None:
    """No credential: AuthError with the daemon's detail, one request, no retry loop."""
    _, record = make_key("pairs:*")
    daemon = await auth_daemon(daemon_factory, tmp_path / "keys.toml", record)
    async with FeedClient(daemon.url) as feed:
        with pytest.raises(AuthError) as caught:
            async with asyncio.timeout(WAIT):
                await feed.__anext__()
    assert caught.value.status == 401
    assert caught.value.detail


async def test_a_pair_not_granted_is_forbidden_naming_it(daemon_factory, tmp_path) -> None:
    """A key for other pairs only: ForbiddenError whose pairs are the daemon's refusal."""
    key, record = make_key("pairs:ETH-*")
    daemon = await auth_daemon(daemon_factory, tmp_path / "keys.toml", record)
    async with FeedClient(daemon.url, pairs=[daemon.pair], api_key=key) as feed:
        with pytest.raises(ForbiddenError) as caught:
            async with asyncio.timeout(WAIT):
                await feed.__anext__()
    assert caught.value.pairs == (daemon.pair,)


async def test_reauth_at_expiry_resumes_with_the_next_key_without_gap(
    daemon_factory, tmp_path
) -> None:
    """The first key expires mid-stream: reauth, the provider's key, every id once."""
    first, first_row = make_key("pairs:*", time.time() + 1.5)
    second, second_row = make_key("pairs:*", None, first_row)
    daemon = await auth_daemon(daemon_factory, tmp_path / "keys.toml", first_row, second_row)
    asked: list[str] = []

    def provider() -> str:
        asked.append("asked")
        return second

    states: list[State] = []
    ticks: list[Tick] = []
    feed = FeedClient(
        daemon.url,
        api_key=first,
        token_provider=provider,
        on_state=lambda c: states.append(c.state),
    )

    async def read() -> None:
        async for tick in feed:
            ticks.append(tick)

    async with feed:
        reader = asyncio.create_task(read())
        last = 0
        # Prices before, around and after the expiry (1.5 s in), one every 0.25 s.
        for n in range(12):
            last = await daemon.tick(f"{73400 + n}.5")
            await asyncio.sleep(0.25)
        async with asyncio.timeout(WAIT):
            while not ticks or ticks[-1].id < last:  # noqa: ASYNC110 - polling the list
                await asyncio.sleep(0.02)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    ids = [t.id for t in ticks]
    assert ids == list(range(ids[0], last + 1)), "no gap and no duplicate across the reauth"
    assert asked == ["asked"], "the provider was asked once, at the reauth"
    assert State.RECONNECTING in states
    assert feed.error is None
