"""The daemon's alert REST API: rules, webhook endpoints and failed deliveries.

::

    async with AlertsAPI("http://localhost:8080", api_key=key) as api:
        rule = await api.create_rule({"pair": "BTC-USD", "kind": "crosses_up", "level": "70000"})

Every non-2xx answer raises: 401 ``AuthError``, 403 ``ForbiddenError``, another 4xx
``RequestRejected`` whose ``.detail`` and ``.field`` come from the daemon's problem+json
(``field`` names the request value to fix), and a 5xx or no answer ``ServiceError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlunsplit

import aiohttp

from bittrade_feed_client._version import __version__
from bittrade_feed_client.alertmodels import AlertRule, Delivery, Webhook, WebhookTest
from bittrade_feed_client.connection import (
    STREAM_PATH,
    daemon_url,
    describe,
    problem_detail,
    retry_after,
)
from bittrade_feed_client.credentials import Credentials
from bittrade_feed_client.errors import (
    AuthError,
    ForbiddenError,
    ProtocolError,
    RequestRejected,
    ServiceError,
)
from bittrade_feed_client.models import Alert

RULES = "/api/alerts/rules"
WEBHOOKS = "/api/alerts/webhooks"
DELIVERIES = "/api/alerts/deliveries"


class AlertsAPI:
    """A typed caller of ``/api/alerts/...`` (needs a credential with the ``alerts`` scope
    when the daemon has auth on; with auth off every caller is the owner ``local``).

    ``url`` is the daemon's base URL (a stream URL is accepted too). ``token`` or
    ``api_key`` is sent as ``Authorization: Bearer``. ``timeout`` bounds each call.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.base = base_url(url)
        self._credentials = Credentials(token, api_key, None, timeout)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session this object opened (not one passed in); idempotent."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- rules ---------------------------------------------------------------------

    async def create_rule(self, rule: Mapping[str, Any]) -> AlertRule:
        """A new rule (``pair``, ``kind`` and its fields, optional ``frequency``,
        ``expires``, ``webhooks``); the daemon's answer with its ETag."""
        body, headers = await self._call("POST", RULES, body=rule)
        return AlertRule.from_json(body, headers.get("ETag"))

    async def list_rules(self) -> list[AlertRule]:
        """The caller's rules, oldest first."""
        body, _ = await self._call("GET", RULES)
        return [AlertRule.from_json(r) for r in _items(body, "rules")]

    async def get_rule(self, rule_id: int) -> AlertRule:
        """One rule, with its ETag (``RequestRejected`` 404 if it is not the caller's)."""
        body, headers = await self._call("GET", f"{RULES}/{int(rule_id)}")
        return AlertRule.from_json(body, headers.get("ETag"))

    async def update_rule(
        self, rule_id: int, rule: Mapping[str, Any], *, etag: str | None = None
    ) -> AlertRule:
        """Replace a rule's definition (its state starts over). With ``etag`` (from
        ``get_rule``) it is sent as If-Match: a rule changed since is a 412, not lost."""
        body, headers = await self._call(
            "PUT", f"{RULES}/{int(rule_id)}", body=rule, headers=_if_match(etag)
        )
        return AlertRule.from_json(body, headers.get("ETag"))

    async def delete_rule(self, rule_id: int, *, etag: str | None = None) -> None:
        """Delete a rule, its firings and undelivered webhooks (If-Match with ``etag``)."""
        await self._call("DELETE", f"{RULES}/{int(rule_id)}", headers=_if_match(etag))

    async def rule_firings(self, rule_id: int, limit: int = 100) -> list[Alert]:
        """A rule's firings, newest first (the same records the stream's alerts are)."""
        path = f"{RULES}/{int(rule_id)}/firings"
        body, _ = await self._call("GET", path, params={"limit": str(limit)})
        return [Alert.from_json(f) for f in _items(body, "firings")]

    async def test_rule(self, rule_id: int) -> Alert:
        """Record a test firing (no price caused it) and deliver it like a real one."""
        body, _ = await self._call("POST", f"{RULES}/{int(rule_id)}/test")
        return Alert.from_json(body)

    # -- webhook endpoints -----------------------------------------------------------

    async def create_webhook(self, url: str, body_format: str = "standard") -> Webhook:
        """A new endpoint; keep its ``secret``, it is shown this once. ``body_format``:
        ``standard`` (Standard Webhooks) or ``alertmanager`` (Alertmanager's webhook JSON)."""
        body, _ = await self._call("POST", WEBHOOKS, body={"url": url, "format": body_format})
        return Webhook.from_json(body)

    async def list_webhooks(self) -> list[Webhook]:
        """The caller's endpoints, oldest first, without secrets."""
        body, _ = await self._call("GET", WEBHOOKS)
        return [Webhook.from_json(w) for w in _items(body, "webhooks")]

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete an endpoint and its undelivered webhooks."""
        await self._call("DELETE", f"{WEBHOOKS}/{_segment(webhook_id)}")

    async def rotate_webhook(self, webhook_id: str) -> Webhook:
        """A new secret (in the answer, once); the old one signs too until
        ``old_secret_until``."""
        body, _ = await self._call("POST", f"{WEBHOOKS}/{_segment(webhook_id)}/rotate")
        return Webhook.from_json(body)

    async def test_webhook(self, webhook_id: str) -> WebhookTest:
        """One signed test delivery now, and how it went."""
        body, _ = await self._call("POST", f"{WEBHOOKS}/{_segment(webhook_id)}/test")
        return WebhookTest.from_json(body)

    # -- failed deliveries -----------------------------------------------------------

    async def list_deliveries(self, limit: int = 100) -> list[Delivery]:
        """The caller's failed webhook deliveries, newest first."""
        body, _ = await self._call("GET", DELIVERIES, params={"limit": str(limit)})
        return [Delivery.from_json(d) for d in _items(body, "deliveries")]

    async def retry_delivery(self, delivery_id: str) -> None:
        """Queue a failed delivery again, due now (the same ``webhook-id``)."""
        await self._call("POST", f"{DELIVERIES}/{_segment(delivery_id)}/retry")

    # -- the one way a call is made --------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """(decoded JSON or ``None``, answer headers) of a 2xx; the named error otherwise."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        sent = {"Accept": "application/json", "User-Agent": f"bittrade-feed-client/{__version__}"}
        authorization = self._credentials.header
        if authorization is not None:
            sent["Authorization"] = authorization
        sent.update(headers or {})
        try:
            async with self._session.request(
                method,
                self.base + path,
                json=None if body is None else dict(body),
                headers=sent,
                params=params,
                timeout=self._timeout,
            ) as resp:
                if resp.status >= 300:
                    raise await _problem(resp)
                if resp.status == 204:
                    return None, resp.headers
                try:
                    return await resp.json(), resp.headers
                except (aiohttp.ContentTypeError, ValueError) as exc:
                    raise ProtocolError(
                        f"{method} {path} answered {resp.status}, not JSON"
                    ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ServiceError(None, f"{method} {path}: {describe(exc)}") from exc


async def _problem(resp: aiohttp.ClientResponse) -> Exception:
    """The error a non-2xx answer means, with the problem's detail and field."""
    detail, doc = await problem_detail(resp)
    status = resp.status
    if status == 401:
        return AuthError(detail)
    if status == 403:
        return ForbiddenError(detail)
    if status >= 500 or status < 400:
        return ServiceError(status, detail, retry_after(resp))
    field = doc.get("field")
    return RequestRejected(status, detail, field if isinstance(field, str) else None)


def base_url(url: str) -> str:
    """The daemon's base URL, without a trailing slash (a stream URL's path dropped)."""
    parts = daemon_url(url)
    path = parts.path.removesuffix(STREAM_PATH).rstrip("/")
    return urlunsplit(parts._replace(path=path, query="", fragment=""))


def _items(body: Any, key: str) -> list[Any]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"expected {{{key!r}: [...]}}, got {body!r}"[:200])
    return items


def _if_match(etag: str | None) -> dict[str, str]:
    return {} if etag is None else {"If-Match": etag}


def _segment(ident: str) -> str:
    """An id as one path segment: a ``/`` or ``..`` in it cannot reach another route."""
    text = str(ident)
    if text.strip(".") == "":
        raise ValueError(f"{text!r} is not an id")
    return quote(text, safe="")
