"""SSRF-safe async HTTP for every HTTP provider, and the status-code → outcome mapping.

The guard lives in the connection layer (processors/ssrf.py), so no request can get around it:
httpx's connection pool gets a network backend that resolves, checks every address and connects
to the address it checked. An explicit allow-list of networks exists for tests
(`allow=("127.0.0.0/8", "::1/128")`).
Redirects are never followed, proxies from the environment are ignored, every phase has a
timeout, the whole exchange has a deadline, and at most `max_response_bytes` of a body is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from processors.exceptions import PermanentSendError, RetryableSendError
from processors.ssrf import (
    GuardedBackend,
    Resolver,
    SsrfRefusedError,
    check_address,
    system_resolver,
)

__all__ = [
    "HttpResponse",
    "Resolver",
    "SafeHttp",
    "SsrfRefusedError",
    "check_address",
    "check_status",
    "parse_retry_after",
]

_USER_AGENT = "tidings/0.1 (+https://github.com/tidings)"


# Connections per httpcore pool (see SafeHttp.__init__).
_SHARD = 32


def _client(
    ctx: ssl.SSLContext,
    max_connections: int,
    http2: bool,
    backend: httpcore.AsyncNetworkBackend,
    timeout: httpx.Timeout,
) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(http2=http2, verify=ctx, trust_env=False)
    # httpx exposes no hook for the network backend; swap in a pool that uses ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ctx, max_connections=max_connections, http2=http2, network_backend=backend
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
        headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
    )


@dataclass(frozen=True)
class HttpResponse:
    """A finished exchange; `body` holds at most max_response_bytes (`truncated` says if cut)."""

    status: int
    headers: httpx.Headers
    body: bytes
    truncated: bool = False

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (never raises)."""
        try:
            return httpx.Response(200, content=self.body).json()
        except ValueError:
            return None


class SafeHttp:
    """One pooled, SSRF-guarded client per provider: its limits are that provider's own."""

    def __init__(
        self,
        *,
        allow: Iterable[str] = (),
        allow_http: bool = False,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        total_timeout_s: float = 30.0,
        max_response_bytes: int = 64 * 1024,
        max_connections: int = 64,
        http2: bool = False,
        verify: ssl.SSLContext | bool = True,
        resolver: Resolver | None = None,
    ) -> None:
        try:
            self.allow = tuple(ipaddress.ip_network(a, strict=False) for a in allow)
        except ValueError as exc:
            raise ValueError(f"http allow-list: {exc}: give networks like 127.0.0.0/8") from exc
        self.allow_http = allow_http
        self.total_timeout_s = total_timeout_s
        self.max_response_bytes = max_response_bytes
        ctx = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if http2:
            ctx.set_alpn_protocols(["h2", "http/1.1"])
        backend = GuardedBackend(self.allow, resolver or system_resolver, connect_timeout_s)
        # httpcore's pool scans every connection on every request (and every queued request
        # against every connection): past a few dozen connections that scan dominates and, at
        # a few hundred, outruns the timeouts. So a large limit is split over small pools.
        shards = -(-max_connections // _SHARD)
        per_shard = -(-max_connections // shards)
        self._clients = [
            _client(
                ctx, per_shard, http2, backend, httpx.Timeout(timeout_s, connect=connect_timeout_s)
            )
            for _ in range(shards)
        ]
        self._busy = [0] * shards  # requests in flight per pool; a request takes the least busy

    def _check_url(self, url: str) -> httpx.URL:
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise PermanentSendError(f"bad URL {url!r}: {exc}", code="invalid_url") from exc
        if u.scheme not in ("https", "http") or (u.scheme == "http" and not self.allow_http):
            raise PermanentSendError(
                f"URL {url!r}: scheme {u.scheme!r} refused, only https is allowed: fix the URL",
                code="invalid_url",
            )
        if not u.host or u.userinfo:
            raise PermanentSendError(
                f"URL {url!r} needs a host and must not carry credentials: fix the URL",
                code="invalid_url",
            )
        return u

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> HttpResponse:
        """One exchange; raises SsrfRefusedError, PermanentSendError or RetryableSendError."""
        u = self._check_url(url)
        where = f"{method} {u.scheme}://{u.host}{u.path}"
        try:
            async with asyncio.timeout(self.total_timeout_s):
                i = min(range(len(self._busy)), key=self._busy.__getitem__)
                client = self._clients[i]
                self._busy[i] += 1
                try:
                    req = client.build_request(
                        method, u, headers=headers, content=content, data=data
                    )
                    resp = await client.send(
                        req, stream=True, auth=httpx.BasicAuth(*auth) if auth else None
                    )
                    try:
                        body, truncated = await self._read_capped(resp)
                    finally:
                        await resp.aclose()
                finally:
                    self._busy[i] -= 1
        except TimeoutError as exc:
            raise RetryableSendError(
                f"{where}: no complete answer within {self.total_timeout_s}s", code="timeout"
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise _retry(where, exc, "connect_timeout", "is the endpoint up?") from exc
        except httpx.ConnectError as exc:
            raise _retry(where, exc, "connect_failed", "is the endpoint up?") from exc
        except httpx.TimeoutException as exc:
            raise _retry(where, exc, "timeout", "the provider is slow") from exc
        except httpx.LocalProtocolError as exc:
            # Refused by our own HTTP layer before anything went out: the request is malformed.
            raise PermanentSendError(
                f"{where}: the request is not valid HTTP ({exc}): fix the header or body the "
                "template or provider settings produce",
                code="invalid_request",
            ) from exc
        except httpx.TransportError as exc:
            raise _retry(where, exc, "transport_error", "the connection broke") from exc
        except httpx.HTTPError as exc:
            # Anything else httpx raises is about the answer, not the connection: the provider
            # may have taken the message, so it is not retried; the DLQ keeps it for a look.
            raise PermanentSendError(
                f"{where}: unusable answer ({type(exc).__name__}: {exc}); the provider may have "
                "accepted the message: check with it before replaying",
                code="bad_response",
            ) from exc
        return HttpResponse(resp.status_code, resp.headers, body, truncated)

    async def _read_capped(self, resp: httpx.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        # Raw bytes: we ask for no content coding, and never inflate what a server compresses
        # anyway (a small gzip bomb would otherwise expand before the cap applies).
        async for chunk in resp.aiter_raw():  # bounded: stops at the cap
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_response_bytes:
                return b"".join(chunks)[: self.max_response_bytes], True
        return b"".join(chunks), False

    async def close(self) -> None:
        """Close pooled connections."""
        for client in self._clients:
            await client.aclose()


def _retry(where: str, exc: Exception, code: str, hint: str) -> RetryableSendError:
    return RetryableSendError(f"{where}: {type(exc).__name__}: {exc}: {hint}", code=code)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def check_status(resp: HttpResponse, what: str) -> None:
    """2xx passes; 408/429/5xx → RetryableSendError (Retry-After); 3xx/4xx → PermanentSendError."""
    status = resp.status
    if 200 <= status < 300:
        return
    snippet = resp.body[:300].decode("utf-8", "replace")
    if status in (408, 429) or status >= 500:
        raise RetryableSendError(
            f"{what}: HTTP {status} {snippet!r}: the provider is overloaded or down; will retry",
            code=f"http_{status}",
            retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
        )
    if 300 <= status < 400:
        raise PermanentSendError(
            f"{what}: HTTP {status} redirect to {resp.headers.get('location')!r} refused "
            "(redirects are never followed): configure the final URL",
            code="redirect_refused",
        )
    raise PermanentSendError(
        f"{what}: HTTP {status} {snippet!r}: the provider refused this message; "
        "fix the payload, recipient or credentials, then replay from the DLQ",
        code=f"http_{status}",
    )
