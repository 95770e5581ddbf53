"""Provider settings per channel: an ordered list (primary first, then fallbacks).

Each entry's `kind` picks the provider implementation. In the environment, a list is JSON:
`TIDINGS_CHANNELS__EMAIL='[{"kind":"smtp","name":"primary"}, {"kind":"smtp","name":"backup"}]'`.

Settings are pure data: a key given as a file (`*_file`) is only a path here. The registry
(processors/registry.py) reads it when it builds the providers and names the setting when the file
is missing or invalid, so loading settings never touches the filesystem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from schemas.settings_base import Frozen
from schemas.smtp import SmtpSettings

__all__ = [
    "ApnsProviderSettings",
    "BreakerSettings",
    "ChannelsSettings",
    "FcmProviderSettings",
    "HttpSettings",
    "InAppProviderSettings",
    "ProviderBase",
    "ProviderSettings",
    "SlackProviderSettings",
    "SmtpProviderSettings",
    "TwilioProviderSettings",
    "WebPushProviderSettings",
    "WebhookProviderSettings",
]


class HttpSettings(Frozen):
    """Outbound HTTP for HTTP providers (SSRF guard, timeouts, caps)."""

    # Networks allowed despite being non-global (tests, private relays): e.g. 127.0.0.1/32.
    allow: tuple[str, ...] = ()
    allow_http: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    # PEM bundle of CAs to trust instead of the system's (a private relay, a test peer).
    ca_file: Path | None = None


class ProviderBase(Frozen):
    """What every provider's settings share."""

    # At most this many sends in flight to this provider at once, so a slow provider cannot
    # take the whole process's send slots (`runtime.send_concurrency`); also its HTTP pool size.
    max_concurrency: int = Field(default=32, ge=1, le=10000)
    # At most this many sends per second to this provider (its API's rate limit, e.g.
    # Twilio's 100/s): sends wait their turn (pacing), none is dropped. None: no pacing.
    rate_per_s: float | None = Field(default=None, gt=0, le=100000)


def _exactly_one(owner: str, a: str, a_set: bool, b: str, b_set: bool) -> None:
    """ValueError naming both fields unless exactly one of them is set."""
    if a_set == b_set:
        given = "both" if a_set else "neither"
        raise ValueError(
            f"{owner}: set exactly one of `{a}` and `{b}`, {given} given: "
            f"`{a}` for the key itself (e.g. from a secret), `{b}` for a path to it"
        )


class SmtpProviderSettings(SmtpSettings, ProviderBase):
    """An SMTP provider for the email channel."""

    kind: Literal["smtp"] = "smtp"
    name: str = "smtp"
    pool_size: int = Field(default=8, ge=1, le=256)


class WebhookProviderSettings(ProviderBase):
    """Signed webhooks (Standard Webhooks); the URL is the recipient."""

    kind: Literal["webhook"] = "webhook"
    name: str = "webhook"
    secrets: tuple[SecretStr, ...] = Field(min_length=1)
    http: HttpSettings = HttpSettings()


class SlackProviderSettings(ProviderBase):
    """A Slack incoming webhook; the webhook URL is the recipient."""

    kind: Literal["slack"] = "slack"
    name: str = "slack"
    allowed_hosts: tuple[str, ...] | None = ("hooks.slack.com",)
    http: HttpSettings = HttpSettings()


class TwilioProviderSettings(ProviderBase):
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


class InAppProviderSettings(ProviderBase):
    """The in-app inbox (Postgres + Redis from the main settings)."""

    kind: Literal["inapp"] = "inapp"
    name: str = "inbox"


class FcmProviderSettings(ProviderBase):
    """Firebase Cloud Messaging HTTP v1 (push); the recipient's address is the FCM token.

    The service-account JSON key (Firebase Messaging role) is given either inline
    (`service_account_json`, e.g. from a secret) or as a path (`service_account_file`).
    """

    kind: Literal["fcm"] = "fcm"
    name: str = "fcm"
    service_account_file: Path | None = None
    service_account_json: SecretStr | None = None
    base_url: str = "https://fcm.googleapis.com"
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        _exactly_one(
            "fcm", "service_account_json", self.service_account_json is not None,
            "service_account_file", self.service_account_file is not None,
        )  # fmt: skip
        return self


class ApnsProviderSettings(ProviderBase):
    """Apple Push Notification service (push) with a token-based (.p8) key; address: hex token.

    The .p8 key's PEM text is given either inline (`private_key`) or as a path
    (`private_key_file`). `environment` picks Apple's production or sandbox host;
    `base_url`, when set, overrides it (tests, a relay).
    """

    kind: Literal["apns"] = "apns"
    name: str = "apns"
    team_id: str = Field(min_length=1)
    key_id: str = Field(min_length=1)
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    topic: str = Field(min_length=1)  # the app's bundle id
    environment: Literal["production", "sandbox"] = "production"
    base_url: str | None = None
    push_type: Literal["alert", "background"] = "alert"
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        _exactly_one(
            "apns", "private_key", self.private_key is not None,
            "private_key_file", self.private_key_file is not None,
        )  # fmt: skip
        return self


class WebPushProviderSettings(ProviderBase):
    """Web Push (RFC 8291/8292); the recipient's address is the browser's PushSubscription JSON.

    The VAPID key (unencrypted PEM, P-256) is given either inline (`vapid_private_key`) or as a
    path (`vapid_private_key_file`). `subject` is how push services contact the sender.
    """

    kind: Literal["webpush"] = "webpush"
    name: str = "webpush"
    vapid_private_key: SecretStr | None = None
    vapid_private_key_file: Path | None = None
    subject: str
    # How long the push service keeps an undelivered message; services cap it at about 4 weeks.
    ttl_s: int = Field(default=24 * 3600, ge=0, le=28 * 24 * 3600)
    http: HttpSettings = HttpSettings()

    @field_validator("subject")
    @classmethod
    def _contactable(cls, v: str) -> str:
        mailto = v.startswith("mailto:") and "@" in v
        https = v.startswith("https://") and len(v) > len("https://")
        if not (mailto or https):
            raise ValueError(
                f"webpush subject {v!r} must be a mailto: or https: URL push services can "
                "contact you at, e.g. mailto:ops@example.com"
            )
        return v

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        _exactly_one(
            "webpush", "vapid_private_key", self.vapid_private_key is not None,
            "vapid_private_key_file", self.vapid_private_key_file is not None,
        )  # fmt: skip
        return self


ProviderSettings = Annotated[
    SmtpProviderSettings
    | WebhookProviderSettings
    | SlackProviderSettings
    | TwilioProviderSettings
    | InAppProviderSettings
    | FcmProviderSettings
    | ApnsProviderSettings
    | WebPushProviderSettings,
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
