"""Build each channel's providers from settings: an ordered failover chain with breakers.

`build_providers(settings)` never connects: providers open connections on their first send. It
does read key files (`*_file` settings; settings themselves stay pure data) and checks every key
parses, so a bad key stops the stage at start-up, not at the first push. Every such error is a
ValueError naming the setting (`channels.push[0].private_key_file`), the file and the fix.

Each chain is a Failover whose per-provider limits are the providers' `max_concurrency`. Push
and Web Push providers report dead tokens to Postgres (`PostgresDeadTokens`, table
`dead_tokens`): one store per chain, closed when the chain is closed.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from processors.breaker import BreakerConfig
from processors.channels.email import EmailProvider, UnsubscribeLinks
from processors.channels.inapp import InAppProvider
from processors.channels.push import (
    APNS_PRODUCTION,
    APNS_SANDBOX,
    ApnsProvider,
    FcmProvider,
    PostgresDeadTokens,
    ServiceAccount,
    WebPushProvider,
)
from processors.channels.slack import SlackProvider
from processors.channels.sms import TwilioSmsProvider
from processors.channels.webhook import WebhookProvider
from processors.failover import Failover
from processors.http import SafeHttp
from processors.provider import Provider
from schemas.channels import CHANNELS, Channel
from schemas.providers import (
    ApnsProviderSettings,
    FcmProviderSettings,
    HttpSettings,
    InAppProviderSettings,
    ProviderSettings,
    SlackProviderSettings,
    SmtpProviderSettings,
    TwilioProviderSettings,
    WebhookProviderSettings,
    WebPushProviderSettings,
)
from schemas.settings import TidingsSettings

__all__ = ["build_providers"]

log = logging.getLogger(__name__)

_REPORTS_DEAD_TOKENS = (FcmProviderSettings, ApnsProviderSettings, WebPushProviderSettings)
_APNS_HOWTO = ".p8 key from Apple Developer (Certificates, Identifiers & Profiles → Keys)"
_VAPID_HOWTO = (
    "VAPID key, e.g. from `openssl ecparam -name prime256v1 -genkey -noout | "
    "openssl pkcs8 -topk8 -nocrypt`"
)


class _Misconfigured(ValueError):
    """A settings error whose message already names the setting."""


class _Chain(Failover):
    """A Failover that also closes what its providers share (the dead-token store)."""

    def __init__(
        self,
        channel: str,
        providers: Sequence[Provider],
        *,
        breaker_config: BreakerConfig,
        limits: Mapping[str, int],
        shared: Sequence[PostgresDeadTokens],
        rates: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(
            channel, providers, breaker_config=breaker_config, limits=limits, rates=rates
        )
        self._shared = tuple(shared)

    async def close(self) -> None:
        """Close the providers, then the shared store (errors logged, as for providers)."""
        await super().close()
        for store in self._shared:
            try:
                await store.close()
            except Exception:
                log.exception("closing the dead-token store of channel %s failed", self.channel)


def _http(h: HttpSettings, where: str, *, max_connections: int, http2: bool = False) -> SafeHttp:
    verify: ssl.SSLContext | bool = True
    if h.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(h.ca_file))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise _Misconfigured(
                f"{where}.http.ca_file = {h.ca_file}: cannot load it as a PEM CA bundle "
                f"({exc}): fix the path or unset it to trust the system's CAs"
            ) from exc
    return SafeHttp(
        allow=h.allow,
        allow_http=h.allow_http,
        timeout_s=h.timeout_s,
        max_response_bytes=h.max_response_bytes,
        max_connections=max_connections,
        http2=http2,
        verify=verify,
    )


def _key_text(
    where: str, inline_field: str, inline: SecretStr | None, file_field: str, path: Path | None
) -> tuple[str, str]:
    """The key's text and a label for errors: the inline secret, else the file's content."""
    if inline is not None:
        return inline.get_secret_value(), f"{where}.{inline_field}"
    assert path is not None  # the settings validator demands exactly one of the two
    label = f"{where}.{file_field} = {path}"
    try:
        return path.read_text(encoding="utf-8"), label
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Misconfigured(
            f"{label}: cannot read the key file ({reason}): fix the path or its permissions, "
            f"or give the key itself in `{inline_field}`"
        ) from exc


def _private_key(text: str, label: str, want: str) -> object:
    """Parse an unencrypted PEM private key; _Misconfigured naming `label` when it isn't one."""
    try:
        return serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise _Misconfigured(
            f"{label}: not an unencrypted PEM private key ({exc}): give the {want}"
        ) from exc


def _fcm(spec: FcmProviderSettings, where: str, dead: PostgresDeadTokens | None) -> FcmProvider:
    text, label = _key_text(
        where, "service_account_json", spec.service_account_json,
        "service_account_file", spec.service_account_file,
    )  # fmt: skip
    try:
        account = ServiceAccount.from_json(text)
    except ValueError as exc:
        raise _Misconfigured(f"{label}: {exc}") from exc
    want = "service account's RSA key as Google issued it"
    if not isinstance(_private_key(account.private_key, label, want), rsa.RSAPrivateKey):
        raise _Misconfigured(f"{label}: private_key is not an RSA key: give the {want}")
    return FcmProvider(
        account,
        name=spec.name,
        base_url=spec.base_url,
        http=_http(spec.http, where, max_connections=spec.max_concurrency),
        on_dead_token=dead,
    )


def _p256(text: str, label: str, want: str) -> None:
    key = _private_key(text, label, want)
    if not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"):
        raise _Misconfigured(f"{label}: not a P-256 (prime256v1) EC key: give the {want}")


def _apns(spec: ApnsProviderSettings, where: str, dead: PostgresDeadTokens | None) -> ApnsProvider:
    text, label = _key_text(
        where, "private_key", spec.private_key, "private_key_file", spec.private_key_file
    )
    _p256(text, label, _APNS_HOWTO)
    default = APNS_SANDBOX if spec.environment == "sandbox" else APNS_PRODUCTION
    return ApnsProvider(
        team_id=spec.team_id,
        key_id=spec.key_id,
        private_key=text,
        topic=spec.topic,
        name=spec.name,
        base_url=spec.base_url or default,
        push_type=spec.push_type,
        http=_http(spec.http, where, max_connections=spec.max_concurrency, http2=True),
        on_dead_token=dead,
    )


def _webpush(
    spec: WebPushProviderSettings, where: str, dead: PostgresDeadTokens | None
) -> WebPushProvider:
    text, label = _key_text(
        where, "vapid_private_key", spec.vapid_private_key,
        "vapid_private_key_file", spec.vapid_private_key_file,
    )  # fmt: skip
    _p256(text, label, _VAPID_HOWTO)
    return WebPushProvider(
        vapid_private_key=text,
        subject=spec.subject,
        name=spec.name,
        ttl_s=spec.ttl_s,
        http=_http(spec.http, where, max_connections=spec.max_concurrency),
        on_dead_token=dead,
    )


def _unsubscribe(s: TidingsSettings) -> UnsubscribeLinks | None:
    cb = s.callbacks
    if not cb.unsubscribe_secrets:
        return None
    return UnsubscribeLinks(cb.base_url(), cb.unsubscribe_secrets[0].get_secret_value().encode())


def _one(
    spec: ProviderSettings, s: TidingsSettings, where: str, dead: PostgresDeadTokens | None
) -> Provider:
    if isinstance(spec, SmtpProviderSettings):
        return EmailProvider(
            spec, name=spec.name, pool_size=spec.pool_size, unsubscribe=_unsubscribe(s)
        )
    if isinstance(spec, WebhookProviderSettings):
        secrets = [x.get_secret_value() for x in spec.secrets]
        http = _http(spec.http, where, max_connections=spec.max_concurrency)
        return WebhookProvider(secrets, name=spec.name, http=http)
    if isinstance(spec, SlackProviderSettings):
        http = _http(spec.http, where, max_connections=spec.max_concurrency)
        return SlackProvider(name=spec.name, http=http, allowed_hosts=spec.allowed_hosts)
    if isinstance(spec, TwilioProviderSettings):
        return TwilioSmsProvider(
            account_sid=spec.account_sid,
            auth_token=spec.auth_token,
            from_number=spec.from_number,
            messaging_service_sid=spec.messaging_service_sid,
            status_callback_url=spec.status_callback_url,
            name=spec.name,
            base_url=spec.base_url,
            http=_http(spec.http, where, max_connections=spec.max_concurrency),
        )
    if isinstance(spec, InAppProviderSettings):
        return InAppProvider(
            conninfo=s.postgres.conninfo(), redis_url=s.redis.url.get_secret_value(), name=spec.name
        )
    if isinstance(spec, FcmProviderSettings):
        return _fcm(spec, where, dead)
    if isinstance(spec, ApnsProviderSettings):
        return _apns(spec, where, dead)
    if isinstance(spec, WebPushProviderSettings):
        return _webpush(spec, where, dead)
    raise ValueError(f"unknown provider kind {spec!r}")  # unreachable: the union is closed


def _chain(
    channel: Channel, chain: Sequence[ProviderSettings], s: TidingsSettings, breaker: BreakerConfig
) -> Failover:
    needs_store = any(isinstance(p, _REPORTS_DEAD_TOKENS) for p in chain)
    dead = PostgresDeadTokens(s.postgres.conninfo()) if needs_store else None
    providers: list[Provider] = []
    for i, spec in enumerate(chain):
        # The default email chain comes from the top-level `smtp` section.
        implicit = channel == "email" and s.channels.email is None
        where = "smtp" if implicit else f"channels.{channel}[{i}]"
        try:
            providers.append(_one(spec, s, where, dead))
        except _Misconfigured:
            raise
        except ValueError as exc:  # a provider's own check: add which setting it was
            raise _Misconfigured(f"{where} (kind {spec.kind}): {exc}") from exc
    return _Chain(
        channel,
        providers,
        breaker_config=breaker,
        limits={p.name: _limit(p) for p in chain},
        shared=[dead] if dead is not None else [],
        rates={p.name: p.rate_per_s for p in chain if p.rate_per_s},
    )


def _limit(p: ProviderSettings) -> int:
    # An SMTP provider sends one mail per pooled connection: more slots than connections
    # would only let claimed mail queue inside the pool while its claim's lease runs.
    if isinstance(p, SmtpProviderSettings):
        return min(p.max_concurrency, p.pool_size)
    return p.max_concurrency


def build_providers(s: TidingsSettings) -> dict[str, Provider]:
    """One failover chain per channel that has providers, in `CHANNELS` order. Reads key files;
    never connects.

    Raises ValueError (naming the setting, the file and the fix) on a missing, unreadable or
    invalid key, or a provider listed under the wrong channel.
    """
    b = s.channels.breaker
    breaker = BreakerConfig(
        window_s=b.window_s, min_calls=b.min_calls, failure_rate=b.failure_rate,
        open_for_s=b.open_for_s,
    )  # fmt: skip
    specs = {ch: _listed(s, ch) for ch in CHANNELS}
    return {ch: _chain(ch, chain, s, breaker) for ch, chain in specs.items() if chain}


def _listed(s: TidingsSettings, channel: Channel) -> tuple[ProviderSettings, ...]:
    """The providers under `channels.<channel>`; without `channels.email`, the `smtp` section."""
    if channel == "email" and s.channels.email is None:
        return (SmtpProviderSettings(**s.smtp.model_dump()),)
    # ChannelsSettings has one field per channel (tests/unit/schemas/test_channels.py).
    chain: tuple[ProviderSettings, ...] = getattr(s.channels, channel)
    return chain
