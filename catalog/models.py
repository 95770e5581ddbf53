"""Frozen models of the catalog: a rule as written in YAML, rendered email content, a match."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from schemas.channels import CHANNELS, Priority
from schemas.content import EmailContent

__all__ = [
    "CHANNEL_POLICIES",
    "KNOWN_CHANNELS",
    "PRIORITIES",
    "REACHES",
    "RECIPIENT_KINDS",
    "RENDERABLE_CHANNELS",
    "ChannelPolicy",
    "EmailContent",
    "Match",
    "Priority",
    "RecipientKind",
    "Rule",
]

# The channels a rule may name: schemas.channels.CHANNELS, under the catalog's old name.
KNOWN_CHANNELS = CHANNELS
# Channels whose templates the catalog can render (catalog/channels.py); the loader refuses
# rules naming any other channel so that a gap shows at load time, not when a message is due.
RENDERABLE_CHANNELS: frozenset[str] = frozenset(CHANNELS)

ChannelPolicy = Literal["all", "first-available"]
CHANNEL_POLICIES: tuple[str, ...] = ("all", "first-available")

# What a recipient string is: a user id (resolved to addresses by the directory later) or an
# explicit address. `REACHES` says which channels can reach each kind.
RecipientKind = Literal["user", "email", "phone", "url"]
RECIPIENT_KINDS: tuple[str, ...] = ("user", "email", "phone", "url")
REACHES: dict[str, frozenset[str]] = {
    "user": frozenset(CHANNELS),
    "email": frozenset({"email"}),
    "phone": frozenset({"sms"}),
    "url": frozenset({"webhook", "slack"}),
}

PRIORITIES: tuple[str, ...] = get_args(Priority)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def _check_channel(value: str) -> str:
    if value not in KNOWN_CHANNELS:
        raise ValueError(
            f"unknown channel {value!r}; use one of {', '.join(sorted(KNOWN_CHANNELS))}"
        )
    return value


def _check_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice; list it once")
        seen.add(value)
    return values


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            "variable name is not an identifier, so templates could not use it; use letters, "
            "digits and '_', not starting with a digit"
        )
    return name


def _check_recipient(value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise ValueError("the expression is empty; write a CEL expression")
        return value
    if isinstance(value, dict) and len(value) == 1:
        [(kind, source)] = value.items()
        if kind in RECIPIENT_KINDS and isinstance(source, str) and source:
            return value
    raise ValueError(
        "a recipient is a CEL expression string, or a mapping with one key of "
        f"{', '.join(RECIPIENT_KINDS)} whose value is a CEL expression (`- user: event.data.id`)"
    )


NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
RecipientSpec = Annotated[str | dict[str, str], BeforeValidator(_check_recipient)]
Identifier = Annotated[StrictStr, AfterValidator(_check_id)]
ChannelName = Annotated[StrictStr, AfterValidator(_check_channel)]
VariableName = Annotated[StrictStr, AfterValidator(_check_name)]


class Rule(BaseModel):
    """One notification rule: which events, which condition, who, on which channels, how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    version: StrictInt = Field(ge=1)
    description: StrictStr = ""
    events: Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)]
    when: NonEmptyStr = "true"
    recipients: Annotated[tuple[RecipientSpec, ...], Field(min_length=1)]
    channels: Annotated[tuple[ChannelName, ...], Field(min_length=1), AfterValidator(_check_unique)]
    channel_policy: ChannelPolicy = "all"
    template: Identifier
    priority: Priority = "normal"
    category: Identifier
    enabled: StrictBool = True
    variables: dict[VariableName, NonEmptyStr] = Field(default_factory=dict)
    idempotency_key: NonEmptyStr | None = None
    tenants: tuple[NonEmptyStr, ...] = ()
    locale: NonEmptyStr | None = None
    # Per directory recipient (`- user:` entries): a CEL condition over `event`, `now` and
    # `recipient` (the directory's record: locale, timezone, attributes, ...).
    recipient_when: NonEmptyStr | None = None


class Match(BaseModel):
    """One notification to send: a rule matched an event for one (recipient, channel)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    rule_version: int
    recipient: str
    channel: str
    template_id: str
    template_version: str
    priority: Priority
    category: str
    variables: dict[str, Any]
    recipient_kind: RecipientKind = "user"
    # first-available: the other channels that can reach the recipient, in rule order, for a
    # later stage to fall back on when the directory or the provider says the first can't.
    fallback_channels: tuple[str, ...] = ()
    idempotency_key: str | None = None
    locale: str | None = None
    tenant: str | None = None
    # A `- user:` recipient: an id the recipient directory resolves to addresses (route does,
    # per batch); False: `recipient` is the address itself.
    directory: bool = False
