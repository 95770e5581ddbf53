"""A trigger: "run this rule for these recipients with this data" (`tidings.notify` events).

The gateway's `POST /v1/notify` produces one, and any producer may: it is a CloudEvent of
type `NOTIFY_TYPE` on the `topics.notify` topic whose data is a `Trigger`. Route matches it
against the one rule it names (that rule's `events:` don't apply; its `when`, tenants,
channels, template and preferences do), seeing the trigger's `data` as `event.data`
(docs/contracts.md#triggers). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MAX_TRIGGER_RECIPIENTS",
    "NOTIFY_SOURCE",
    "NOTIFY_TYPE",
    "Trigger",
    "trigger_event_id",
]

NOTIFY_TYPE = "tidings.notify"
NOTIFY_SOURCE = "tidings:gateway/notify"
MAX_TRIGGER_RECIPIENTS = 1000

RecipientText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                 max_length=512)]  # fmt: skip


class Trigger(BaseModel):
    """What a `tidings.notify` event asks for (its `data`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="the id of the catalog rule to run"
    )
    recipients: Annotated[list[RecipientText], Field(max_length=MAX_TRIGGER_RECIPIENTS)] | None = (
        Field(
            default=None,
            description="who: an email address, a phone number (E.164), an https URL, or a "
            "recipient id of the directory (anything else). Absent: the rule's own "
            "`recipients:`, evaluated over `data`",
        )
    )
    data: dict[str, Any] = Field(
        default_factory=dict, description="what the rule and its template see as `event.data`"
    )


def trigger_event_id(tenant: str, idempotency_key: str | None) -> str:
    """The event id of a trigger: derived from (tenant, Idempotency-Key) when there is one,
    so a retried request is the same event (and its notifications the same ids) even when
    the gateway no longer remembers the key; else a fresh one."""
    if idempotency_key is None:
        return f"ntf_{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
    return f"ntf_{digest[:32]}"
