"""What the alert REST API answers: rules, webhook endpoints, test outcomes, deliveries.

Each record is built from the daemon's JSON by ``from_json``, which raises ``ValueError``
for anything that is not one (a newer daemon's extra fields are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bittrade_feed_client.models import parse_time, positive_id

RULE_STATE = frozenset({"id", "version", "created", "fired", "last_fired", "done"})
"""The fields of a rule answer the daemon keeps; the rest is the rule's definition."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert rule: its definition, version and what it has done so far."""

    id: int
    version: int
    etag: str | None
    """The answer's ``ETag`` (``None`` in a listing): pass it to update and delete."""
    definition: dict[str, Any]
    """What ``create_rule`` / ``update_rule`` take: ``pair``, ``kind``, ``level`` or ``pct``
    and ``window_s``, ``frequency``, ``expires``, ``webhooks``, as the daemon states them."""
    created: datetime
    fired: int
    last_fired: datetime | None
    done: bool
    """A ``once`` rule that fired, or a repeating one at its ``max_count`` or expiry."""

    @property
    def pair(self) -> str:
        """The rule's pair."""
        return str(self.definition["pair"])

    @property
    def kind(self) -> str:
        """The rule's kind (``above``, ``crosses_up``, ``pct_move``, ...)."""
        return str(self.definition["kind"])

    @classmethod
    def from_json(cls, data: Any, etag: str | None = None) -> AlertRule:
        """Build from a rule answer; ``ValueError`` if it is not one."""
        try:
            last = data["last_fired"]
            return cls(
                id=positive_id(data["id"], "id"),
                version=positive_id(data["version"], "version"),
                etag=etag,
                definition={k: v for k, v in data.items() if k not in RULE_STATE},
                created=parse_time(data["created"]),
                fired=int(data["fired"]),
                last_fired=None if last is None else parse_time(last),
                done=data["done"] is True,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an alert rule: {data!r}") from exc


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook endpoint; ``secret`` only in the answer to create and rotate."""

    id: str
    url: str
    created: datetime
    disabled: datetime | None
    """When a 410 answer disabled it (``None``: it is in use)."""
    old_secret_until: datetime | None
    """Until when the previous secret signs too, after a rotation."""
    format: str = "standard"
    """The body format: ``standard`` (Standard Webhooks) or ``alertmanager``."""
    secret: str | None = None
    """``whsec_...``: verify deliveries with it (Standard Webhooks); shown once."""

    @classmethod
    def from_json(cls, data: Any) -> Webhook:
        """Build from an endpoint answer; ``ValueError`` if it is not one."""
        try:
            return cls(
                id=str(data["id"]),
                url=str(data["url"]),
                created=parse_time(data["created"]),
                disabled=_optional_time(data["disabled"]),
                old_secret_until=_optional_time(data["old_secret_until"]),
                format=str(data.get("format") or "standard"),
                secret=None if data.get("secret") is None else str(data["secret"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a webhook endpoint: {data!r}") from exc


@dataclass(frozen=True, slots=True)
class WebhookTest:
    """How one signed test delivery to an endpoint went."""

    webhook_id: str
    """The ``webhook-id`` header it carried."""
    delivered: bool
    status: int | None
    """The receiver's HTTP status (``None``: no answer)."""
    error: str | None

    @classmethod
    def from_json(cls, data: Any) -> WebhookTest:
        """Build from a test answer; ``ValueError`` if it is not one."""
        try:
            status = data["status"]
            return cls(
                webhook_id=str(data["webhook_id"]),
                delivered=data["delivered"] is True,
                status=None if status is None else int(status),
                error=None if data["error"] is None else str(data["error"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a webhook test outcome: {data!r}") from exc


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook delivery that failed for good (retry it with ``retry_delivery``)."""

    id: str
    rule_id: int
    firing_id: int
    endpoint_id: str
    attempts: int
    last_error: str | None

    @classmethod
    def from_json(cls, data: Any) -> Delivery:
        """Build from a delivery answer; ``ValueError`` if it is not one."""
        try:
            error = data["last_error"]
            return cls(
                id=str(data["id"]),
                rule_id=positive_id(data["rule_id"], "rule_id"),
                firing_id=positive_id(data["firing_id"], "firing_id"),
                endpoint_id=str(data["endpoint_id"]),
                attempts=int(data["attempts"]),
                last_error=None if error is None else str(error),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a webhook delivery: {data!r}") from exc


def _optional_time(raw: Any) -> datetime | None:
    return None if raw is None else parse_time(raw)
