"""Mobile push over Firebase Cloud Messaging HTTP v1.

Auth: a service-account key signs a JWT (RS256; iss = client_email, scope firebase.messaging,
aud = token_uri, 1 h), exchanged at `token_uri` (OAuth2 JWT-bearer grant) for an access token,
cached until 60 s before it expires; one refresh at a time, and a 401 from FCM drops the cache
and retries the send once. Send: `POST {base}/v1/projects/{project_id}/messages:send`.
`UNREGISTERED` (404) marks the device token dead (hook + DeadTokenError); 429/5xx retry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from processors.channels.push.deadtoken import DeadTokenHook, report_dead
from processors.exceptions import PermanentSendError
from processors.http import HttpResponse, SafeHttp, check_status
from processors.provider import expect_content
from schemas.content import Content, PushContent
from schemas.notification import Notification

__all__ = ["FCM_API", "FCM_SCOPE", "FcmProvider", "ServiceAccount"]

FCM_API = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_TOKEN_MARGIN_S = 60.0


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a Google service-account JSON key that FCM needs."""

    project_id: str
    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str = "https://oauth2.googleapis.com/token"

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        """Parse a key file's text; ValueError naming the missing field."""
        try:
            data = json.loads(text)
            return cls(
                project_id=data["project_id"],
                client_email=data["client_email"],
                private_key=data["private_key"],
                private_key_id=data["private_key_id"],
                token_uri=data.get("token_uri", cls.token_uri),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"FCM service-account key is not a valid key file ({exc!r}): download a JSON "
                "key for a service account with the Firebase Messaging role"
            ) from exc

    @classmethod
    def from_file(cls, path: Path) -> ServiceAccount:
        """Read and parse a key file."""
        return cls.from_json(path.read_text(encoding="utf-8"))


class FcmProvider:
    """FCM HTTP v1 for one Firebase project."""

    channel = "push"

    def __init__(
        self,
        account: ServiceAccount,
        *,
        name: str = "fcm",
        base_url: str = FCM_API,
        http: SafeHttp | None = None,
        on_dead_token: DeadTokenHook | None = None,
        clock: Callable[[], float] = time.time,
        address: Callable[[Notification], str] = lambda n: n.recipient,
    ) -> None:
        self.name = name
        self._account = account
        self._url = f"{base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self._http = http or SafeHttp()
        self._on_dead = on_dead_token
        self._clock = clock
        self._address = address
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.token_fetches = 0

    def message(self, n: Notification, content: PushContent) -> dict[str, Any]:
        """The `messages:send` body; pure."""
        msg: dict[str, Any] = {
            "token": self._address(n),
            "notification": {"title": content.title, "body": content.body},
            "android": {"priority": "high" if n.priority in ("critical", "high") else "normal"},
        }
        if content.data:
            msg["data"] = dict(content.data)
        return {"message": msg}

    def assertion(self) -> str:
        """The signed JWT exchanged for an access token."""
        now = int(self._clock())
        claims = {
            "iss": self._account.client_email,
            "scope": FCM_SCOPE,
            "aud": self._account.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(
            claims,
            self._account.private_key,
            algorithm="RS256",
            headers={"kid": self._account.private_key_id},
        )

    async def access_token(self, *, refresh: bool = False) -> str:
        """A cached access token, fetched again only near expiry (or when `refresh`)."""
        async with self._lock:
            if refresh or self._token is None or self._clock() >= self._expires_at:
                self._token, self._expires_at = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> tuple[str, float]:
        self.token_fetches += 1
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
        form["assertion"] = self.assertion()
        resp = await self._http.request("POST", self._account.token_uri, data=form)
        if resp.status in (400, 401, 403):
            raise PermanentSendError(
                f"FCM token endpoint refused service account {self._account.client_email} "
                f"(HTTP {resp.status} {resp.body[:200]!r}): check the key is current and the "
                "account has the Firebase Messaging role",
                code="auth_failed",
            )
        check_status(resp, f"fcm {self.name} token endpoint")
        body = resp.json()
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise PermanentSendError(
                f"FCM token endpoint answered without access_token: {resp.body[:200]!r}",
                code="bad_provider_response",
            )
        ttl = float(body.get("expires_in", 3600))
        return token, self._clock() + max(0.0, ttl - _TOKEN_MARGIN_S)

    async def send(self, n: Notification, content: Content) -> str:
        """Send; returns FCM's message name. Dead token → hook + DeadTokenError."""
        push = expect_content(content, PushContent, self.name)
        body = json.dumps(self.message(n, push), ensure_ascii=False).encode()
        resp: HttpResponse | None = None
        for attempt in range(2):  # the second pass only after a 401 with a fresh token
            token = await self.access_token(refresh=attempt > 0)
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
            resp = await self._http.request("POST", self._url, headers=headers, content=body)
            if resp.status != 401:
                break
        assert resp is not None
        err = _fcm_error(resp)
        if err == "UNREGISTERED":
            raise await report_dead(
                self._on_dead, n, provider=self.name, token=self._address(n), reason=err
            )
        if err in ("INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR"):
            raise PermanentSendError(
                f"FCM refused the message ({err}, HTTP {resp.status}): "
                f"{resp.body[:300]!r}: fix the payload, token or project configuration",
                code=f"fcm_{err.lower()}",
            )
        check_status(resp, f"fcm {self.name} messages:send")
        name = (resp.json() or {}).get("name")
        if not isinstance(name, str):
            raise PermanentSendError(
                f"FCM answered {resp.status} without a message name: {resp.body[:200]!r}",
                code="bad_provider_response",
            )
        return name

    async def close(self) -> None:
        """Close pooled connections."""
        await self._http.close()


def _fcm_error(resp: HttpResponse) -> str | None:
    """FCM's errorCode (from error.details), else error.status; None on success."""
    if 200 <= resp.status < 300:
        return None
    body = resp.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and isinstance(detail.get("errorCode"), str):
            return str(detail["errorCode"])
    status = error.get("status")
    return status if isinstance(status, str) else None
