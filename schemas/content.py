"""Rendered content per channel: what the catalog's templates produce and providers send."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Content",
    "EmailContent",
    "InAppContent",
    "PushContent",
    "SlackContent",
    "SmsContent",
    "WebhookContent",
]


class _Content(BaseModel):
    model_config = ConfigDict(frozen=True)


class EmailContent(_Content):
    """A rendered email; `html` is None when the template has no HTML body."""

    subject: str
    html: str | None
    text: str


class SmsContent(_Content):
    """An SMS body; `segments` is its GSM-7/UCS-2 segment count."""

    text: str
    segments: int = 1


class PushContent(_Content):
    """A mobile or Web Push notification."""

    title: str
    body: str
    data: dict[str, str] = Field(default_factory=dict)


class SlackContent(_Content):
    """A Slack incoming-webhook message: fallback text and Block Kit blocks."""

    text: str
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class WebhookContent(_Content):
    """A generic webhook's JSON body."""

    body: dict[str, Any]


class InAppContent(_Content):
    """An in-app inbox entry."""

    title: str
    body: str
    data: dict[str, Any] = Field(default_factory=dict)


Content = EmailContent | SmsContent | PushContent | SlackContent | WebhookContent | InAppContent
