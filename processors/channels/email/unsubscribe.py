"""One-click unsubscribe (RFC 8058) links for email to directory recipients. Pure, no I/O.

An email to a `user:` recipient carries

    List-Unsubscribe: <https://notify.example.com/callbacks/unsubscribe/<token>>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

The token names what to opt the recipient out of (the notification's category, else its
rule) and is signed with HMAC-SHA256 under `callbacks.unsubscribe_secrets[0]`; any secret
of the list verifies, so a secret is rotated by putting the new one first and dropping the
old one once its mail is old enough (`callbacks.unsubscribe_max_age_days`). A token is
`<payload>.<mac>`, both base64url without padding; the payload is the JSON array
`[1, tenant, user, notification id, category, rule id, issued epoch s]`.

No header is written for a notification that went past preferences (`bypassed`: a critical
rule or a required category): there is nothing to opt out of. The callbacks endpoint that
verifies the token and applies it is `streams.http.unsubscribe`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.notification import Notification

__all__ = [
    "UNSUBSCRIBE_ROUTE",
    "InvalidUnsubscribeToken",
    "UnsubscribeLinks",
    "UnsubscribeToken",
    "sign_token",
    "verify_token",
]

# The callbacks endpoint's path for one token (aiohttp route syntax).
UNSUBSCRIBE_ROUTE = "/callbacks/unsubscribe/{token}"
_PREFIX = "/callbacks/unsubscribe/"
_DOMAIN = b"tidings-unsubscribe-v1\x00"  # a MAC made for this purpose, and no other
_MAC_BYTES = 16
# Far above a real token (~250 characters), far below what would cost anything to check.
MAX_TOKEN_CHARS = 2048


class InvalidUnsubscribeToken(ValueError):
    """The token is malformed, forged, signed with an unknown secret or too old."""


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """What one unsubscribe link opts out of: `category` when set, else `rule_id`."""

    tenant: str
    user: str
    notification_id: str
    category: str | None
    rule_id: str
    issued_s: int

    def opt_out(self) -> tuple[str, str]:
        """(`category` or `rule`, its name): the preference the link sets."""
        return ("category", self.category) if self.category else ("rule", self.rule_id)

    def reason(self) -> str:
        """The status reason naming that preference: `opt-out:category:marketing`."""
        kind, name = self.opt_out()
        return f"opt-out:{kind}:{name}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, _DOMAIN + payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def sign_token(secret: bytes, t: UnsubscribeToken) -> str:
    """The token text for `t`, signed with `secret`; pure, never raises."""
    doc = [1, t.tenant, t.user, t.notification_id, t.category, t.rule_id, t.issued_s]
    payload = _b64(json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify_token(
    secrets: Sequence[bytes], text: str, *, now_s: float, max_age_s: float
) -> UnsubscribeToken:
    """The token `text` stands for, if one of `secrets` signed it and it is not too old.

    Raises InvalidUnsubscribeToken saying which check failed (shape, signature, age).
    Constant-time in the MAC comparison; pure.
    """
    if not secrets:
        raise InvalidUnsubscribeToken("no callbacks.unsubscribe_secrets are configured")
    if len(text) > MAX_TOKEN_CHARS or text.count(".") != 1:
        raise InvalidUnsubscribeToken("the token is not <payload>.<mac>")
    payload, mac_text = text.split(".")
    try:
        mac = _unb64(mac_text)
    except ValueError as exc:
        raise InvalidUnsubscribeToken("the token's MAC is not base64url") from exc
    if not any(hmac.compare_digest(mac, _mac(s, payload)) for s in secrets):
        raise InvalidUnsubscribeToken(
            "the token's signature matches none of callbacks.unsubscribe_secrets "
            "(forged, altered, or signed with a secret since removed)"
        )
    try:
        doc: Any = json.loads(_unb64(payload))
        version, tenant, user, nid, category, rule_id, issued = doc
        ok = version == 1 and all(isinstance(x, str) for x in (tenant, user, nid, rule_id))
        ok = ok and (category is None or isinstance(category, str)) and isinstance(issued, int)
    except (ValueError, TypeError) as exc:
        raise InvalidUnsubscribeToken("the token's payload is not a version-1 token") from exc
    if not ok:
        raise InvalidUnsubscribeToken("the token's payload is not a version-1 token")
    if now_s - issued > max_age_s:
        days = (now_s - issued) / 86400
        raise InvalidUnsubscribeToken(
            f"the link is {days:.0f} days old, older than callbacks.unsubscribe_max_age_days"
        )
    return UnsubscribeToken(tenant, user, nid, category, rule_id, issued)


class UnsubscribeLinks:
    """Makes the List-Unsubscribe headers of a notification; pure (the clock aside)."""

    def __init__(self, base_url: str, secret: bytes) -> None:
        url = base_url.rstrip("/")
        if not url.isascii() or any(c in url for c in "<>\r\n\t ,"):
            raise ValueError(
                f"callbacks.public_url {url!r} cannot go in a List-Unsubscribe header: "
                "use a plain ASCII https URL"
            )
        self._base = url + _PREFIX
        self._secret = secret

    def headers(self, n: Notification, now_s: float | None = None) -> list[tuple[str, str]]:
        """The two RFC 8058 headers for `n`, or [] (not a directory recipient, or bypassed)."""
        if n.user is None or n.bypassed is not None or n.priority == "critical":
            return []
        t = UnsubscribeToken(
            n.tenant or "", n.user, n.id, n.category, n.rule_id,
            int(time.time() if now_s is None else now_s),
        )  # fmt: skip
        url = self._base + sign_token(self._secret, t)
        return [
            ("List-Unsubscribe", f"<{url}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
