"""Frozen models of the catalog: a rule as written in YAML, rendered email content, a match."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from schemas.content import EmailContent

__all__ = [
    "KNOWN_CHANNELS",
    "PRIORITIES",
    "RENDERABLE_CHANNELS",
    "EmailContent",
    "Match",
    "Priority",
    "Rule",
]

KNOWN_CHANNELS: frozenset[str] = frozenset(
    {"email", "sms", "push", "webpush", "slack", "webhook", "inapp"}
)
# Channels whose templates the catalog can render today; the loader refuses rules naming
# any other channel so that the gap shows at load time, not when a message is due.
RENDERABLE_CHANNELS: frozenset[str] = frozenset({"email"})

Priority = Literal["critical", "high", "normal", "low"]
PRIORITIES: tuple[str, ...] = ("critical", "high", "normal", "low")

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


NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
Identifier = Annotated[StrictStr, AfterValidator(_check_id)]
Channel = Annotated[StrictStr, AfterValidator(_check_channel)]
VariableName = Annotated[StrictStr, AfterValidator(_check_name)]


class Rule(BaseModel):
    """One notification rule: which events, which condition, who, on which channels, how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    version: StrictInt = Field(ge=1)
    description: StrictStr = ""
    events: Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)]
    when: NonEmptyStr = "true"
    recipients: Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)]
    channels: Annotated[tuple[Channel, ...], Field(min_length=1), AfterValidator(_check_unique)]
    template: Identifier
    priority: Priority = "normal"
    category: Identifier
    enabled: StrictBool = True
    variables: dict[VariableName, NonEmptyStr] = Field(default_factory=dict)


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
