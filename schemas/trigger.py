"""A trigger: "run this rule (or send this template) for these recipients with this data".

The gateway's `POST /v1/notify` produces one, and any producer may: it is a CloudEvent of
type `NOTIFY_TYPE` on the `topics.notify` topic whose data is a `Trigger`. Two modes:

- **rule**: route matches it against the one rule it names (that rule's `events:` don't
  apply; its `when`, tenants, channels, template and preferences do), seeing the trigger's
  `data` as `event.data`;
- **template**: no rule; the trigger names the template, its channels and category, and its
  recipients; the template sees each top-level key of `data` as a variable. Preferences,
  caps and quiet hours apply as for a rule (by the category; the rule id in statuses is
  `template:<id>`).

docs/contracts.md#triggers. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.channels import CHANNELS, Channel, Priority

__all__ = [
    "MAX_TRIGGER_RECIPIENTS",
    "NOTIFY_SOURCE",
    "NOTIFY_TYPE",
    "TEMPLATE_RULE_PREFIX",
    "Trigger",
    "trigger_event_id",
]

NOTIFY_TYPE = "tidings.notify"
NOTIFY_SOURCE = "tidings:gateway/notify"
MAX_TRIGGER_RECIPIENTS = 1000
# The rule id a template-mode trigger's notifications carry: `template:<template id>`. A
# catalog rule id can't contain ':', so the two never collide.
TEMPLATE_RULE_PREFIX = "template:"
_TEMPLATE_ONLY = ("channels", "channel_policy", "category", "priority", "locale")

RecipientText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                 max_length=512)]  # fmt: skip


Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")]


class Trigger(BaseModel):
    """What a `tidings.notify` event asks for (its `data`): exactly one of `rule` and
    `template`; the template mode needs `channels`, `category` and `recipients`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Name | None = Field(default=None, description="the id of the catalog rule to run")
    template: Name | None = Field(
        default=None,
        description="instead of a rule: the id of the catalog template to send (then "
        "`channels`, `category` and `recipients` are required)",
    )
    channels: Annotated[list[Channel], Field(min_length=1, max_length=len(CHANNELS))] | None = (
        Field(default=None, description="template mode: the channels to send on, in order")
    )
    channel_policy: Literal["all", "first-available"] | None = Field(
        default=None,
        description="template mode: every channel a recipient can be reached on (`all`, the "
        "default), or the first of them (`first-available`)",
    )
    category: Name | None = Field(
        default=None,
        description="template mode: the category, for preferences and caps (`security`, …)",
    )
    priority: Priority | None = Field(
        default=None, description="template mode: the priority (default `normal`)"
    )
    locale: Locale | None = Field(
        default=None,
        description="template mode: the locale to render (default: the recipient's, else the "
        "catalog's)",
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
        default_factory=dict,
        description="what the rule sees as `event.data`; in template mode, the template's "
        "variables",
    )

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if (self.rule is None) == (self.template is None):
            raise ValueError(
                "give exactly one of `rule` (run a catalog rule) and `template` (send a "
                "template with `channels`, `category` and `recipients`)"
            )
        if self.rule is not None:
            given = [f for f in _TEMPLATE_ONLY if getattr(self, f) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to a template trigger only: a rule trigger "
                    "takes them from the rule; leave them out, or name a `template`"
                )
            return self
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError("`channels` lists a channel twice; list each once")
        missing = [f for f in ("channels", "category", "recipients") if getattr(self, f) is None]
        if missing:
            raise ValueError(
                f"a template trigger needs {', '.join(missing)}: there is no rule to take them from"
            )
        return self

    @property
    def rule_id(self) -> str:
        """The rule id its notifications carry: the rule's, or `template:<template id>`."""
        return self.rule if self.rule is not None else f"{TEMPLATE_RULE_PREFIX}{self.template}"


def trigger_event_id(tenant: str, idempotency_key: str | None) -> str:
    """The event id of a trigger: derived from (tenant, Idempotency-Key) when there is one,
    so a retried request is the same event (and its notifications the same ids) even when
    the gateway no longer remembers the key; else a fresh one."""
    if idempotency_key is None:
        return f"ntf_{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
    return f"ntf_{digest[:32]}"
