"""Provider status callbacks → status events: the pure half (no I/O, nothing blocks).

Twilio posts a form to `POST {public base}/callbacks/twilio/<provider name>?nid=<notification id>`
(the provider appends `nid` to its `status_callback_url`:
`processors.channels.sms.with_notification_id`).
This module reconstructs the URL Twilio signed, reads the notification id from the query and
turns a final `MessageStatus` into a `delivered` or `failed` status event. The HTTP server is
`streams.http.callbacks_app`; the runnable stage is `streams.stages.callbacks`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from processors.channels.sms import NID_PARAM, callback_status
from schemas.notification import Notification
from schemas.providers import ProviderSettings, TwilioProviderSettings
from schemas.settings import TidingsSettings
from schemas.status import ErrorInfo, StatusEvent, build_status

__all__ = [
    "STAGE",
    "TWILIO_ROUTE",
    "callback_url",
    "callback_url_problems",
    "notification_ref",
    "redact",
    "signed_url",
    "twilio_event",
    "twilio_providers",
]

# The status events' source is `tidings/<STAGE>`.
STAGE = "callbacks"
# aiohttp route of Twilio's status callbacks; `{provider}` is the provider's `name`.
TWILIO_ROUTE = "/callbacks/twilio/{provider}"


def callback_url(base_url: str, provider: str) -> str:
    """The `status_callback_url` to configure for Twilio provider `provider`; pure."""
    return base_url.rstrip("/") + TWILIO_ROUTE.format(provider=provider)


def signed_url(base_url: str, raw_path_qs: str) -> str:
    """The URL Twilio signed: the public base plus the request's raw path and query; pure.

    `raw_path_qs` is the request target exactly as received (`/callbacks/twilio/x?nid=…`), not
    re-encoded, because the signature covers the URL byte for byte.
    """
    return base_url.rstrip("/") + raw_path_qs


def notification_ref(query: Mapping[str, str]) -> str | None:
    """The notification id in the callback's query (canonical UUID text), or None; pure."""
    raw = query.get(NID_PARAM)
    if not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def twilio_providers(sms: Iterable[ProviderSettings]) -> dict[str, TwilioProviderSettings]:
    """The Twilio providers of the `channels.sms` chain, by name; pure."""
    return {p.name: p for p in sms if isinstance(p, TwilioProviderSettings)}


def twilio_event(
    form: Mapping[str, str],
    n: Notification,
    *,
    provider: str,
    attempt: int,
    now: datetime | None = None,
) -> StatusEvent | None:
    """The status event a Twilio status callback means, or None for an intermediate state.

    `delivered` (and WhatsApp's `read`) → `delivered`; `failed`, `undelivered`, `canceled` →
    `failed` with `ErrorInfo(code="twilio_<ErrorCode>")` (`twilio_<status>` when Twilio gave no
    code). `queued`, `sending`, `sent`, … → None. Pure, never raises.
    """
    status = callback_status(form)
    if status is None:
        return None
    sid = form.get("MessageSid") or form.get("SmsSid") or None
    error = None
    if status == "failed":
        raw = form.get("MessageStatus") or form.get("SmsStatus") or "failed"
        code = form.get("ErrorCode") or ""
        detail = f" {form['ErrorMessage']!r}" if form.get("ErrorMessage") else ""
        message = f"Twilio reported message {sid or '(no sid)'} {raw}" + (
            f": error {code}{detail} (https://www.twilio.com/docs/api/errors/{code})"
            if code
            else f"{detail} without an error code"
        )
        error = ErrorInfo(code=f"twilio_{code or raw}", message=message)
    return build_status(
        n,
        status,
        stage=STAGE,
        attempt=attempt,
        provider=provider,
        provider_message_id=sid,
        error=error,
        now=now,
    )


def callback_url_problems(settings: TidingsSettings) -> list[str]:
    """What is wrong with the Twilio providers' `status_callback_url`s; pure."""
    base = settings.callbacks.base_url()
    twilio = twilio_providers(settings.channels.sms)
    if not twilio:
        if settings.callbacks.unsubscribe_secrets:
            return []  # it serves one-click unsubscribe
        return ["no Twilio provider in channels.sms and no callbacks.unsubscribe_secrets: "
                "the callbacks endpoint has nothing to serve"]  # fmt: skip
    problems = []
    for name, p in twilio.items():
        want = callback_url(base, name)
        got = (p.status_callback_url or "").split("#", 1)[0].split("?", 1)[0]
        if got != want:
            problems.append(
                f"Twilio provider {name!r} has status_callback_url "
                f"{redact(p.status_callback_url)}; set it to {redact(want)} for delivery receipts "
                "(and callbacks.public_url to the base URL Twilio reaches)"
            )
    return problems


def redact(url: str | None) -> str:
    """`url` without user:password, for logs and answers; pure."""
    if not url:
        return repr(url)
    u = urlsplit(url)
    if u.username is None and u.password is None:
        return url
    host = u.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"***@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))
