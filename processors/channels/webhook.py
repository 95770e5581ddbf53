"""Generic webhooks: an HTTPS POST of the rendered JSON body, signed per Standard Webhooks.

Headers (https://www.standardwebhooks.com/): `webhook-id` = the notification id (stable across
retries and replays, so receivers can deduplicate), `webhook-timestamp` = Unix seconds at send
time, `webhook-signature` = `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`; during
a key rotation every configured secret signs, space-separated. Secrets look like `whsec_<base64>`.
The target URL is the recipient's address (`address` picks it; default `n.recipient`) and goes
through the SSRF guard of processors/http.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence

from processors.http import SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, WebhookContent
from schemas.notification import Notification

__all__ = ["WebhookProvider", "decode_secret", "sign"]

_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError (cause and fix) when malformed."""
    raw = secret.removeprefix(_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(
            "webhook secret is not base64 after the 'whsec_' prefix: use 'whsec_' followed by "
            "base64 of 32 random bytes (e.g. `openssl rand -base64 32`)"
        ) from exc
    if len(key) < 16:
        raise ValueError(f"webhook secret has {len(key)} bytes; use at least 24 random bytes")
    return key


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<sig>` per key, space-separated; pure."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    sigs = (hmac.new(k, signed, hashlib.sha256).digest() for k in keys)
    return " ".join("v1," + base64.b64encode(s).decode() for s in sigs)


class WebhookProvider:
    """POST signed JSON to the recipient's endpoint; returns the webhook-id as message id."""

    channel = "webhook"

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        name: str = "webhook",
        http: SafeHttp | None = None,
        address: Callable[[Notification], str] = lambda n: n.recipient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("webhook provider needs at least one signing secret (whsec_…)")
        self.name = name
        self._keys = [decode_secret(s) for s in secrets]
        self._http = http or SafeHttp()
        self._address = address
        self._clock = clock

    def headers(self, n: Notification, body: bytes) -> dict[str, str]:
        """The request headers for one send (signature included); pure given the clock."""
        ts = int(self._clock())
        return {
            "content-type": "application/json",
            "webhook-id": n.id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self._keys, n.id, ts, body),
        }

    async def send(self, n: Notification, content: Content) -> str:
        """Sign and POST; raises SsrfRefusedError, Retryable/PermanentSendError."""
        hook = expect_content(content, WebhookContent, self.name)
        body = json.dumps(hook.body, separators=(",", ":"), ensure_ascii=False).encode()
        url = self._address(n)
        resp = await self._http.request("POST", url, headers=self.headers(n, body), content=body)
        check_status(resp, f"webhook {self.name} POST")
        return n.id

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()
