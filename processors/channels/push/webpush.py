"""Web Push: payload encrypted with aes128gcm (RFC 8291), VAPID authentication (RFC 8292).

The recipient's address is the browser's PushSubscription JSON
(`{"endpoint": …, "keys": {"p256dh": …, "auth": …}}`). The payload (JSON: title, body, data,
notification id) is encrypted with a fresh ECDH key per message (http_ece), and sent with
`Authorization: vapid t=<ES256 JWT: aud = endpoint origin, exp ≤ 24 h, sub>, k=<public key>`,
`TTL`, `Urgency`, `Content-Encoding: aes128gcm`. Endpoints are user-supplied URLs, so they go
through the SSRF guard. 404/410 from the push service → the subscription is dead.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import http_ece
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processors.channels.push.deadtoken import DeadTokenHook, report_dead
from processors.exceptions import PermanentSendError
from processors.http import SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, PushContent
from schemas.notification import Notification

__all__ = ["MAX_PAYLOAD", "Subscription", "WebPushProvider", "b64url", "parse_subscription"]

MAX_PAYLOAD = 4078  # RFC 8291: 4096-byte record minus the 18 bytes of padding delimiter + tag
_X962 = serialization.PublicFormat.UncompressedPoint


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push uses everywhere."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Subscription:
    """A parsed PushSubscription: endpoint URL, the browser's P-256 key and auth secret."""

    def __init__(self, endpoint: str, p256dh: bytes, auth: bytes) -> None:
        self.endpoint, self.p256dh, self.auth = endpoint, p256dh, auth


def parse_subscription(raw: str) -> Subscription:
    """Parse the subscription JSON; PermanentSendError (invalid_subscription) when malformed."""
    try:
        data = json.loads(raw)
        sub = Subscription(
            data["endpoint"], _unb64url(data["keys"]["p256dh"]), _unb64url(data["keys"]["auth"])
        )
        if len(sub.p256dh) != 65 or len(sub.auth) != 16:
            raise ValueError("p256dh must be 65 bytes and auth 16 bytes")
        return sub
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentSendError(
            f"web push subscription is not a valid PushSubscription JSON ({exc!r}): store "
            "JSON.stringify(subscription) from the browser as the recipient's address",
            code="invalid_subscription",
        ) from exc


class WebPushProvider:
    """Web Push to any standards-compliant push service (FCM, Mozilla autopush, Apple, …)."""

    channel = "webpush"

    def __init__(
        self,
        *,
        vapid_private_key: str,
        subject: str,
        name: str = "webpush",
        ttl_s: int = 24 * 3600,
        http: SafeHttp | None = None,
        on_dead_token: DeadTokenHook | None = None,
        clock: Callable[[], float] = time.time,
        address: Callable[[Notification], str] = lambda n: n.recipient,
    ) -> None:
        if not subject.startswith(("mailto:", "https://")):
            raise ValueError(
                f"VAPID subject {subject!r} must be a mailto: or https: URL push services can "
                "contact you at, e.g. mailto:ops@example.com"
            )
        try:
            key = serialization.load_pem_private_key(vapid_private_key.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "VAPID private key must be an unencrypted PEM P-256 key: generate one with "
                "`openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("VAPID private key must be on curve P-256 (prime256v1)")
        self.name = name
        self._key = key
        self.public_key = b64url(key.public_key().public_bytes(serialization.Encoding.X962, _X962))
        self._subject = subject
        self._ttl = ttl_s
        self._http = http or SafeHttp()
        self._on_dead = on_dead_token
        self._clock = clock
        self._address = address

    def vapid_header(self, endpoint: str) -> str:
        """`Authorization` for one endpoint (RFC 8292): a JWT bound to its origin, 12 h."""
        u = httpx.URL(endpoint)
        origin = f"{u.scheme}://{u.netloc.decode()}"
        claims = {"aud": origin, "exp": int(self._clock()) + 12 * 3600, "sub": self._subject}
        token = jwt.encode(claims, self._key, algorithm="ES256")
        return f"vapid t={token}, k={self.public_key}"

    def payload(self, n: Notification, content: PushContent) -> bytes:
        """The plaintext the service worker receives; PermanentSendError when too large."""
        doc: dict[str, Any] = {"id": n.id, "title": content.title, "body": content.body}
        if content.data:
            doc["data"] = dict(content.data)
        raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        if len(raw) > MAX_PAYLOAD:
            raise PermanentSendError(
                f"web push payload is {len(raw)} bytes, the limit is {MAX_PAYLOAD}: shorten "
                "the template or send a reference the service worker fetches",
                code="payload_too_large",
            )
        return raw

    def encrypt(self, sub: Subscription, plaintext: bytes) -> bytes:
        """aes128gcm body (RFC 8188 header + record) for this subscription (fresh ECDH key)."""
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        body: bytes = http_ece.encrypt(
            plaintext,
            private_key=ephemeral,
            dh=sub.p256dh,
            auth_secret=sub.auth,
            version="aes128gcm",
        )
        return body

    async def send(self, n: Notification, content: Content) -> str:
        """Encrypt and POST; returns the push service's Location (or the notification id)."""
        push = expect_content(content, PushContent, self.name)
        raw = self._address(n)
        sub = parse_subscription(raw)
        body = self.encrypt(sub, self.payload(n, push))
        headers = {
            "authorization": self.vapid_header(sub.endpoint),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(self._ttl),
            "urgency": "high" if n.priority in ("critical", "high") else "normal",
        }
        resp = await self._http.request("POST", sub.endpoint, headers=headers, content=body)
        if resp.status in (404, 410):
            raise await report_dead(
                self._on_dead, n, provider=self.name, token=sub.endpoint,
                reason=f"HTTP {resp.status} from the push service",
            )  # fmt: skip
        check_status(resp, f"webpush {self.name}")
        return resp.headers.get("location") or n.id

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()
