"""iOS/macOS push over Apple Push Notification service: HTTP/2 with ES256 provider tokens.

`POST {base}/3/device/{device token}` over HTTP/2 with `authorization: bearer <JWT>` (ES256,
header kid = key id, claims iss = team id, iat), `apns-topic` (bundle id), `apns-push-type`,
`apns-priority` (10 for critical/high, 5 otherwise) and `apns-id` (the notification id as a
UUID, so Apple's logs match ours). The JWT is reused for 50 minutes (Apple refuses refreshes
more often than every 20 and tokens older than 60); `ExpiredProviderToken` renews it once.
`410 Unregistered` marks the device token dead (hook + DeadTokenError).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import jwt

from processors.channels.push.deadtoken import DeadTokenHook, report_dead
from processors.exceptions import PermanentSendError
from processors.http import HttpResponse, SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, PushContent
from schemas.notification import NAMESPACE, Notification

__all__ = ["APNS_PRODUCTION", "APNS_SANDBOX", "ApnsProvider"]

APNS_PRODUCTION = "https://api.push.apple.com"
APNS_SANDBOX = "https://api.sandbox.push.apple.com"
_TOKEN_TTL_S = 50 * 60
_HEX = re.compile(r"[0-9a-fA-F]{32,200}\Z")
# Reasons that mean the message or configuration is wrong: retrying cannot help.
_PERMANENT = frozenset({
    "BadDeviceToken", "BadTopic", "DeviceTokenNotForTopic", "TopicDisallowed", "PayloadTooLarge",
    "BadCollapseId", "BadPriority", "BadPushType", "MissingTopic", "InvalidProviderToken",
    "MissingProviderToken", "BadCertificate", "BadCertificateEnvironment", "Forbidden",
})  # fmt: skip


def apns_id(notification_id: str) -> str:
    """The notification id as a UUID (itself if it is one, else a stable uuid5 of it)."""
    try:
        return str(uuid.UUID(notification_id))
    except ValueError:
        return str(uuid.uuid5(NAMESPACE, notification_id))


class ApnsProvider:
    """APNs for one app (topic) with one signing key (.p8) of one team."""

    channel = "push"

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        private_key: str,
        topic: str,
        name: str = "apns",
        base_url: str = APNS_PRODUCTION,
        push_type: Literal["alert", "background"] = "alert",
        http: SafeHttp | None = None,
        on_dead_token: DeadTokenHook | None = None,
        clock: Callable[[], float] = time.time,
        address: Callable[[Notification], str] = lambda n: n.recipient,
    ) -> None:
        if "PRIVATE KEY" not in private_key:
            raise ValueError(
                "APNs private_key must be the PEM text of the .p8 key from Apple Developer "
                "(Certificates, Identifiers & Profiles → Keys), not a path or key id"
            )
        self.name = name
        self._team, self._kid, self._key, self._topic = team_id, key_id, private_key, topic
        self._base = base_url.rstrip("/")
        self._push_type = push_type
        self._http = http or SafeHttp(http2=True)
        self._on_dead = on_dead_token
        self._clock = clock
        self._address = address
        self._jwt: str | None = None
        self._jwt_at = 0.0
        self._lock = asyncio.Lock()
        self.token_mints = 0

    async def provider_token(self, *, renew: bool = False) -> str:
        """The cached ES256 provider token, minted again after 50 minutes (or on `renew`)."""
        async with self._lock:
            now = self._clock()
            if renew or self._jwt is None or now - self._jwt_at >= _TOKEN_TTL_S:
                claims = {"iss": self._team, "iat": int(now)}
                headers = {"kid": self._kid}
                self._jwt = jwt.encode(claims, self._key, algorithm="ES256", headers=headers)
                self._jwt_at = now
                self.token_mints += 1
            return self._jwt

    def payload(self, content: PushContent) -> dict[str, Any]:
        """The JSON body: custom data at the top level, Apple's keys under `aps`; pure."""
        body: dict[str, Any] = dict(content.data)
        if self._push_type == "background":
            body["aps"] = {"content-available": 1}
        else:
            body["aps"] = {"alert": {"title": content.title, "body": content.body}}
        return body

    def headers(self, n: Notification, token: str) -> dict[str, str]:
        """The APNs request headers; pure given the token."""
        urgent = n.priority in ("critical", "high") and self._push_type == "alert"
        return {
            "authorization": f"bearer {token}",
            "apns-topic": self._topic,
            "apns-push-type": self._push_type,
            "apns-priority": "10" if urgent else "5",
            "apns-id": apns_id(n.id),
            "content-type": "application/json",
        }

    async def send(self, n: Notification, content: Content) -> str:
        """Send; returns the apns-id. Raises DeadTokenError, Retryable/PermanentSendError."""
        push = expect_content(content, PushContent, self.name)
        device = self._address(n)
        if not _HEX.match(device):
            raise PermanentSendError(
                f"APNs device token {device[:80]!r} is not hex: store the token the app got "
                "from registerForRemoteNotifications, hex-encoded",
                code="invalid_token",
            )
        body = json.dumps(self.payload(push), ensure_ascii=False).encode()
        url = f"{self._base}/3/device/{device}"
        resp: HttpResponse | None = None
        for attempt in range(2):  # the second pass only after ExpiredProviderToken
            token = await self.provider_token(renew=attempt > 0)
            resp = await self._http.request(
                "POST", url, headers=self.headers(n, token), content=body
            )
            if _reason(resp) != "ExpiredProviderToken":
                break
        assert resp is not None
        reason = _reason(resp)
        if resp.status == 410 or reason == "Unregistered":
            raise await report_dead(
                self._on_dead, n, provider=self.name, token=device, reason=reason or "410"
            )
        if reason in _PERMANENT:
            raise PermanentSendError(
                f"APNs refused the message: {reason} (HTTP {resp.status}): fix the topic, "
                "key, token environment (sandbox vs production) or payload",
                code=f"apns_{reason.lower()}",
            )
        check_status(resp, f"apns {self.name}")
        return resp.headers.get("apns-id") or apns_id(n.id)

    async def close(self) -> None:
        """Close the HTTP/2 connection."""
        await self._http.close()


def _reason(resp: HttpResponse) -> str | None:
    if 200 <= resp.status < 300:
        return None
    body = resp.json()
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None
