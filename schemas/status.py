"""Status events on `notification.status`: CloudEvents JSON, keyed by notification id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from schemas.notification import Notification, stable_id

__all__ = ["STATUSES", "ErrorInfo", "Status", "StatusData", "StatusEvent", "build_status"]

# `unknown`: a sender died between the provider call and its record, and the channel's
# ambiguity policy is `skip`: whether the recipient got it can't be known, and it isn't resent.
# `unsubscribed`: the recipient used the mail's one-click unsubscribe link (its `reason` names
# the opt-out it set); from `tidings/callbacks`, after the `sent`. `read`, `seen`, `archived`:
# the recipient's app marked an in-app entry (the gateway's inbox API), from `tidings/gateway`.
Status = Literal[
    "queued", "suppressed", "sent", "delivered", "failed", "read", "unknown", "unsubscribed",
    "seen", "archived",
]  # fmt: skip
STATUSES: tuple[Status, ...] = (
    "queued", "suppressed", "sent", "delivered", "failed", "read", "unknown", "unsubscribed",
    "seen", "archived",
)  # fmt: skip


class ErrorInfo(BaseModel):
    """Why a notification failed: a stable code and a human message."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class StatusData(BaseModel):
    """The `data` of a status event (the public contract: add fields, never rename)."""

    model_config = ConfigDict(frozen=True)

    notification_id: str
    status: Status
    source_event_id: str
    source_event_type: str
    tenant: str | None = None
    rule_id: str
    rule_version: int
    template_id: str
    template_version: str
    catalog_version: str
    channel: str
    recipient_id: str
    attempt: int
    provider: str | None = None
    provider_message_id: str | None = None
    error: ErrorInfo | None = None
    event_time_ms: int | None = None
    # True on a `sent` that followed a takeover of a sender that died mid-send: the
    # recipient may have this notification twice (same Message-ID / webhook-id to drop it).
    possible_duplicate: bool | None = None
    # `suppressed`: why (`no-address`, `opt-out:category:marketing`, `cap:…`); `unsubscribed`:
    # the opt-out the link set (`opt-out:category:marketing`).
    reason: str | None = None
    # A critical rule or a required category went past the recipient's opt-outs, quiet hours
    # and caps: which (`critical`, `required-category:security`).
    bypassed: str | None = None


class StatusEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode status event."""

    model_config = ConfigDict(frozen=True)

    specversion: str = "1.0"
    id: str
    type: str
    source: str
    time: datetime
    subject: str
    datacontenttype: str = "application/json"
    tenantid: str | None = None
    data: StatusData

    def key(self) -> bytes:
        """Kafka key: the notification id, so one notification's statuses stay in order."""
        return self.data.notification_id.encode()

    def encode(self) -> bytes:
        """The JSON record value."""
        return self.model_dump_json(exclude_none=True).encode()

    def headers(self) -> list[tuple[str, bytes]]:
        """Headers that let consumers filter without parsing (`ce_type` repeats the type)."""
        return [
            ("ce_type", self.type.encode()),
            ("ce_id", self.id.encode()),
            ("ce_subject", self.subject.encode()),
            ("tidings-channel", self.data.channel.encode()),
            ("content-type", b"application/cloudevents+json"),
        ]

    @classmethod
    def decode(cls, raw: bytes) -> StatusEvent:
        """Parse a status record; raises pydantic.ValidationError on a bad payload."""
        return cls.model_validate_json(raw)


def build_status(
    n: Notification,
    status: Status,
    *,
    stage: str,
    attempt: int | None = None,
    provider: str | None = None,
    provider_message_id: str | None = None,
    error: ErrorInfo | None = None,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> StatusEvent:
    """The status event for `n` entering `status`; pure, never raises."""
    att = n.attempt if attempt is None else attempt
    # Deterministic id: a replayed status is recognisably the same status.
    sid = stable_id(f"{n.id}\x1f{status}\x1f{att}")
    return StatusEvent(
        id=sid,
        type=f"notification.{status}",
        source=f"tidings/{stage}",
        time=now or datetime.now(UTC),
        subject=n.id,
        tenantid=n.tenant,
        data=StatusData(
            notification_id=n.id,
            status=status,
            source_event_id=n.event_id,
            source_event_type=n.event_type,
            tenant=n.tenant,
            rule_id=n.rule_id,
            rule_version=n.rule_version,
            template_id=n.template_id,
            template_version=n.template_version,
            catalog_version=n.catalog_version,
            channel=n.channel,
            # A directory recipient is named by its id, not by the address it was sent to.
            recipient_id=n.user or n.recipient,
            attempt=att,
            provider=provider,
            provider_message_id=provider_message_id,
            error=error,
            event_time_ms=n.event_time_ms,
            **(extra or {}),
        ),
    )
