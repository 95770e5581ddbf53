"""SMS over Twilio's Messages API, and the pure checks for Twilio's status callbacks.

Send: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From`
(or `MessagingServiceSid`), `Body`, optional `StatusCallback`, Basic auth (Account SID + Auth
Token, or an API key SID + secret). 201 returns JSON whose `sid` (SM…) is the message id.
Errors carry Twilio's numeric `code`: a few mean the recipient can never get SMS (invalid or
landline number, opted out with STOP) → PermanentSendError; 429 / 20429 / 5xx → retryable.

Correlation: when a status callback URL is configured, each message's `StatusCallback` is that
URL with the notification id appended as query parameter `nid` (`with_notification_id`), so the
callback endpoint (`streams.http.callbacks_app`) knows which notification a receipt is about. Twilio
signs the full URL, query included, so the id is covered by the signature.

Status callbacks: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, full URL + every POST
parameter's name and value, sorted by name)). `validate_twilio_signature` checks it (also with the
port added or removed, as Twilio's own libraries do); `callback_status` maps `MessageStatus` to
the tidings status (`delivered` / `failed`, None for intermediate states).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr

from processors.exceptions import PermanentSendError
from processors.http import SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, SmsContent
from schemas.notification import Notification

__all__ = [
    "NID_PARAM",
    "UNREACHABLE_CODES",
    "TwilioSmsProvider",
    "callback_status",
    "twilio_signature",
    "validate_twilio_signature",
    "with_notification_id",
]

TWILIO_API = "https://api.twilio.com"
# Twilio error codes after which this recipient will not get SMS: retrying cannot help.
UNREACHABLE_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614})
# The query parameter of the status callback URL that carries the notification id.
NID_PARAM = "nid"


class TwilioSmsProvider:
    """Twilio Programmable Messaging; one account (or subaccount) per provider."""

    channel = "sms"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: SecretStr,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback_url: str | None = None,
        api_key_sid: str | None = None,
        name: str = "twilio",
        base_url: str = TWILIO_API,
        http: SafeHttp | None = None,
        address: Callable[[Notification], str] = lambda n: n.recipient,
    ) -> None:
        if not account_sid.startswith("AC"):
            raise ValueError(f"twilio account_sid {account_sid!r} must start with 'AC'")
        if bool(from_number) == bool(messaging_service_sid):
            raise ValueError(
                "twilio: set exactly one of from_number (E.164, e.g. +15005550006) or "
                "messaging_service_sid (MG…)"
            )
        self.name = name
        self._account = account_sid
        self._auth = (api_key_sid or account_sid, auth_token)
        self._from = from_number
        self._service = messaging_service_sid
        self._callback = status_callback_url
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._http = http or SafeHttp()
        self._address = address

    def form(self, n: Notification, content: SmsContent) -> dict[str, str]:
        """The form fields Twilio receives for one send; pure."""
        data = {"To": self._address(n), "Body": content.text}
        if self._from:
            data["From"] = self._from
        if self._service:
            data["MessagingServiceSid"] = self._service
        if self._callback:
            data["StatusCallback"] = with_notification_id(self._callback, n.id)
        return data

    async def send(self, n: Notification, content: Content) -> str:
        """Create the message; returns its SID. Raises Retryable/PermanentSendError."""
        sms = expect_content(content, SmsContent, self.name)
        user, token = self._auth
        resp = await self._http.request(
            "POST",
            self._url,
            data=self.form(n, sms),
            auth=(user, token.get_secret_value()),
            headers={"accept": "application/json"},
        )
        body = resp.json()
        code = body.get("code") if isinstance(body, dict) else None
        if resp.status == 400 and code in UNREACHABLE_CODES:
            raise PermanentSendError(
                f"twilio refused recipient {self._address(n)!r}: error {code} "
                f"{body.get('message')!r} ({body.get('more_info')}): the number cannot get SMS; "
                "fix or remove it in the recipient directory",
                code=f"twilio_{code}",
            )
        if resp.status == 401:
            raise PermanentSendError(
                f"twilio rejected the credentials of account {self._account} (HTTP 401): "
                "check account_sid / api_key_sid and auth_token",
                code="auth_failed",
            )
        check_status(resp, f"twilio {self.name}")
        sid = body.get("sid") if isinstance(body, dict) else None
        if not isinstance(sid, str) or not sid:
            raise PermanentSendError(
                f"twilio answered {resp.status} without a message sid: {resp.body[:200]!r}",
                code="bad_provider_response",
            )
        return sid

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()


def with_notification_id(url: str, nid: str) -> str:
    """`url` with query parameter `nid=<nid>` appended; pure, never raises.

    The existing query is kept byte for byte (Twilio signs the URL exactly as given); a `nid`
    already in it is replaced, and a fragment (Twilio's `#rc=…` connection overrides) stays last.
    """
    u = urlsplit(url)
    kept = [p for p in u.query.split("&") if p and p.split("=", 1)[0] != NID_PARAM]
    kept.append(f"{NID_PARAM}={quote(nid, safe='')}")
    return urlunsplit(u._replace(query="&".join(kept)))


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | Iterable[str]]) -> str:
    """Twilio's X-Twilio-Signature for a form POST to `url`; pure."""
    parts = [url]
    for key in sorted(params):
        value = params[key]
        values = [value] if isinstance(value, str) else sorted(value)
        parts.extend(key + v for v in values)
    digest = hmac.new(auth_token.encode(), "".join(parts).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    u = urlsplit(url)
    default = {"https": 443, "http": 80}.get(u.scheme)
    host = u.hostname or ""
    with_port = u._replace(netloc=f"{host}:{u.port or default}")
    without = u._replace(netloc=host)
    return list(dict.fromkeys([url, urlunsplit(with_port), urlunsplit(without)]))


def validate_twilio_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str | Iterable[str]],
    signature: str | None,
) -> bool:
    """True when `signature` is Twilio's for this request; constant-time, never raises."""
    if not signature or not auth_token:
        return False
    given = signature.encode()
    return any(
        hmac.compare_digest(twilio_signature(auth_token, u, params).encode(), given)
        for u in _port_variants(url)
    )


def callback_status(params: Mapping[str, str]) -> Literal["delivered", "failed"] | None:
    """The tidings status for a Twilio status callback, or None for queued/sending/sent."""
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if status in ("delivered", "read"):
        return "delivered"
    if status in ("failed", "undelivered", "canceled"):
        return "failed"
    return None
