"""Build each channel's providers from settings: an ordered failover chain with breakers."""

from __future__ import annotations

from processors.breaker import BreakerConfig
from processors.failover import Failover
from processors.http import SafeHttp
from processors.inapp import InAppProvider
from processors.provider import EmailProvider, Provider
from processors.slack import SlackProvider
from processors.sms import TwilioSmsProvider
from processors.webhook import WebhookProvider
from schemas.providers import (
    HttpSettings,
    InAppProviderSettings,
    ProviderSettings,
    SlackProviderSettings,
    SmtpProviderSettings,
    TwilioProviderSettings,
    WebhookProviderSettings,
)
from schemas.settings import TidingsSettings

__all__ = ["build_providers"]


def _http(h: HttpSettings) -> SafeHttp:
    return SafeHttp(
        allow=h.allow,
        allow_http=h.allow_http,
        timeout_s=h.timeout_s,
        max_response_bytes=h.max_response_bytes,
    )


def _one(spec: ProviderSettings, s: TidingsSettings) -> Provider:
    if isinstance(spec, SmtpProviderSettings):
        return EmailProvider(spec, name=spec.name, pool_size=spec.pool_size)
    if isinstance(spec, WebhookProviderSettings):
        secrets = [x.get_secret_value() for x in spec.secrets]
        return WebhookProvider(secrets, name=spec.name, http=_http(spec.http))
    if isinstance(spec, SlackProviderSettings):
        return SlackProvider(
            name=spec.name, http=_http(spec.http), allowed_hosts=spec.allowed_hosts
        )
    if isinstance(spec, TwilioProviderSettings):
        return TwilioSmsProvider(
            account_sid=spec.account_sid,
            auth_token=spec.auth_token,
            from_number=spec.from_number,
            messaging_service_sid=spec.messaging_service_sid,
            status_callback_url=spec.status_callback_url,
            name=spec.name,
            base_url=spec.base_url,
            http=_http(spec.http),
        )
    if isinstance(spec, InAppProviderSettings):
        return InAppProvider(
            conninfo=s.postgres.conninfo(), redis_url=s.redis.url.get_secret_value(), name=spec.name
        )
    raise ValueError(f"unknown provider kind {spec!r}")  # unreachable: the union is closed


def build_providers(s: TidingsSettings) -> dict[str, Provider]:
    """One failover chain per channel that has providers; raises ValueError on bad settings.

    Nothing connects here: providers open connections on their first send.
    """
    c = s.channels
    b = c.breaker
    breaker = BreakerConfig(
        window_s=b.window_s, min_calls=b.min_calls, failure_rate=b.failure_rate,
        open_for_s=b.open_for_s,
    )  # fmt: skip
    specs: dict[str, tuple[ProviderSettings, ...]] = {
        "email": c.email if c.email is not None else (SmtpProviderSettings(**s.smtp.model_dump()),),
        "sms": c.sms,
        "slack": c.slack,
        "webhook": c.webhook,
        "inapp": c.inapp,
        "push": c.push,
        "webpush": c.webpush,
    }
    out: dict[str, Provider] = {}
    for channel, chain in specs.items():
        if chain:
            out[channel] = Failover(channel, [_one(p, s) for p in chain], breaker_config=breaker)
    return out
