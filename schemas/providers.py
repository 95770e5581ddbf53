"""Provider settings per channel: an ordered list (primary first, then fallbacks).

Each entry's `kind` picks the provider implementation. In the environment, a list is JSON:
`TIDINGS_CHANNELS__EMAIL='[{"kind":"smtp","name":"primary"}, {"kind":"smtp","name":"backup"}]'`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, SecretStr

from schemas.settings_base import Frozen
from schemas.smtp import SmtpSettings

__all__ = [
    "BreakerSettings",
    "ChannelsSettings",
    "HttpSettings",
    "InAppProviderSettings",
    "ProviderSettings",
    "SlackProviderSettings",
    "SmtpProviderSettings",
    "TwilioProviderSettings",
    "WebhookProviderSettings",
]


class HttpSettings(Frozen):
    """Outbound HTTP for HTTP providers (SSRF guard, timeouts, caps)."""

    # Networks allowed despite being non-global (tests, private relays): e.g. 127.0.0.1/32.
    allow: tuple[str, ...] = ()
    allow_http: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)


class SmtpProviderSettings(SmtpSettings):
    """An SMTP provider for the email channel."""

    kind: Literal["smtp"] = "smtp"
    name: str = "smtp"
    pool_size: int = Field(default=8, ge=1, le=256)


class WebhookProviderSettings(Frozen):
    """Signed webhooks (Standard Webhooks); the URL is the recipient."""

    kind: Literal["webhook"] = "webhook"
    name: str = "webhook"
    secrets: tuple[SecretStr, ...] = Field(min_length=1)
    http: HttpSettings = HttpSettings()


class SlackProviderSettings(Frozen):
    """A Slack incoming webhook; the webhook URL is the recipient."""

    kind: Literal["slack"] = "slack"
    name: str = "slack"
    allowed_hosts: tuple[str, ...] | None = ("hooks.slack.com",)
    http: HttpSettings = HttpSettings()


class TwilioProviderSettings(Frozen):
    """Twilio's Messages API for SMS."""

    kind: Literal["twilio"] = "twilio"
    name: str = "twilio"
    account_sid: str
    auth_token: SecretStr
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback_url: str | None = None
    base_url: str = "https://api.twilio.com"
    http: HttpSettings = HttpSettings()


class InAppProviderSettings(Frozen):
    """The in-app inbox (Postgres + Redis from the main settings)."""

    kind: Literal["inapp"] = "inapp"
    name: str = "inbox"


ProviderSettings = Annotated[
    SmtpProviderSettings
    | WebhookProviderSettings
    | SlackProviderSettings
    | TwilioProviderSettings
    | InAppProviderSettings,
    Field(discriminator="kind"),
]


class BreakerSettings(Frozen):
    """Per-provider circuit breaker."""

    window_s: float = Field(default=30.0, gt=0)
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    open_for_s: float = Field(default=15.0, gt=0)


class ChannelsSettings(Frozen):
    """Providers per channel, primary first. An empty list: the channel dead-letters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # None: one SMTP provider built from the top-level `smtp` settings.
    email: tuple[ProviderSettings, ...] | None = None
    sms: tuple[ProviderSettings, ...] = ()
    slack: tuple[ProviderSettings, ...] = ()
    webhook: tuple[ProviderSettings, ...] = ()
    inapp: tuple[ProviderSettings, ...] = (InAppProviderSettings(),)
    push: tuple[ProviderSettings, ...] = ()
    webpush: tuple[ProviderSettings, ...] = ()
    breaker: BreakerSettings = BreakerSettings()
