"""The credential a subscription sends, and when it may be refreshed.

A static ``token`` (a JWT) or ``api_key`` (``btk_...``) is sent as ``Authorization:
Bearer``. A ``token_provider`` (a plain or async callable returning the token) is asked
for a new one before the first connection when no token is given, after a ``reauth``
event, and after a 401, but never twice without a connection accepting the token in
between: a provider that keeps handing out refused tokens ends the subscription with
``AuthError`` instead of looping against the daemon.

The token is never logged and never part of a ``repr`` or an error message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from bittrade_feed_client.errors import AuthError

TokenProvider = Callable[[], str | Awaitable[str]]
"""Returns the current token; may be ``async``. Called on the client's event loop."""

log = logging.getLogger("bittrade_feed_client")


class Credentials:
    """The token in force, and whether a refresh may still be tried."""

    def __init__(
        self,
        token: str | None,
        api_key: str | None,
        provider: TokenProvider | None,
        timeout: float,
    ) -> None:
        if token and api_key:
            raise ValueError("pass token= or api_key=, not both (both are sent the same way)")
        if provider is not None and not callable(provider):
            raise TypeError("token_provider must be a callable returning the token")
        self._token = token or api_key or None
        self._provider = provider
        self._timeout = timeout
        self._untested = False
        """A refreshed token no connection has accepted yet: a 401 now is final."""

    def __repr__(self) -> str:
        return f"Credentials(token={'set' if self._token else None}, provider={self._provider})"

    @property
    def header(self) -> str | None:
        """The ``Authorization`` value, or ``None`` to send none (no credentials)."""
        return f"Bearer {self._token}" if self._token else None

    @property
    def needs_first_token(self) -> bool:
        """A provider and no token yet: ask it before connecting."""
        return self._provider is not None and not self._token

    def accepted(self) -> None:
        """A connection was let in with the token: the next 401 may try a refresh again."""
        self._untested = False

    def can_refresh(self) -> bool:
        """Whether a 401 may be answered by asking the provider for a new token."""
        return self._provider is not None and not self._untested

    async def refresh(self, why: str) -> None:
        """Ask the provider for a new token; ``AuthError`` if it fails or gives none."""
        if self._provider is None:
            return
        log.info("asking token_provider for a new token: %s", why)
        try:
            async with asyncio.timeout(self._timeout):
                got = self._provider()
                token = await got if inspect.isawaitable(got) else got
        except TimeoutError:
            raise AuthError(f"token_provider gave no token within {self._timeout:g} s") from None
        except Exception as exc:
            # The provider's own message, not the token: it never had one to give.
            raise AuthError(f"token_provider failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(token, str) or not token.strip():  # type: ignore[redundant-expr]
            raise AuthError(f"token_provider returned {type(token).__name__}, not a token")
        self._token = token.strip()
        self._untested = True
