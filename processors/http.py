"""SSRF-safe async HTTP for every HTTP provider, and the status-code → outcome mapping.

HTTP/1.1 providers (webhooks, Slack, SMS, FCM, Web Push) run on aiohttp, HTTP/2 ones (APNs:
`http2=True`) on httpx; docs/decisions/0008-http-client.md says why (httpcore's pool cost ~3 ms
of CPU per request at 32 connections, aiohttp's ~0.1 ms).
The guard lives in the connection layer (processors/ssrf.py), so no request can get around it:
aiohttp's connector (GuardedConnector) and httpcore's network backend (GuardedBackend) resolve,
check every address and connect to an address they checked; IP-literal hosts are checked too.
An explicit allow-list of networks exists for tests (`allow=("127.0.0.0/8", "::1/128")`).
Redirects are never followed, proxies (and .netrc) from the environment are ignored, cookies are
never kept, every phase has a timeout (connect; wait for a pooled connection; each read), the
whole exchange has a deadline, and at most `max_response_bytes` of a body is read.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpcore
import httpx
import yarl

from processors.exceptions import PermanentSendError, RetryableSendError
from processors.ssrf import (
    GuardedBackend,
    GuardedConnector,
    RefusedSocketError,
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


# Connections per httpcore pool (HTTP/2 only, see SafeHttp.__init__).
_SHARD = 32
# What a host can look like once parsed (IDNA hosts are ASCII by then; `%` starts an IPv6 zone).
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")
_HEADERS = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
# aiohttp would add `Content-Type: application/octet-stream` to a POST that names none.
_NO_AUTO_CONTENT_TYPE = ("Content-Type",)


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
        headers=_HEADERS,
    )


@dataclass(frozen=True)
class HttpResponse:
    """A finished exchange; `body` holds at most max_response_bytes (`truncated` says if cut).

    `headers` look names up case-insensitively (aiohttp's or httpx's header mapping)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (never raises)."""
        try:
            return httpx.Response(200, content=self.body).json()
        except ValueError:
            return None


@functools.lru_cache(maxsize=4096)
def _parse(url: str) -> yarl.URL:
    # Endpoints repeat (one per recipient or provider): parse each once. Immutable; bad URLs
    # raise and are not cached.
    return yarl.URL(url)


class SafeHttp:
    """One pooled, SSRF-guarded client per provider: its limits are that provider's own.

    HTTP/1.1 (the default): one aiohttp session whose connector holds at most max_connections
    connections; it is made on first use, in the running event loop. `http2=True`: httpx.
    """

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
        self.max_connections = max_connections
        self.http2 = http2
        ctx = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._ssl = ctx
        self._resolver = resolver or system_resolver
        self._connect_timeout_s = connect_timeout_s
        # connect: waiting for a pooled connection plus opening one (nothing sent yet);
        # sock_connect: one TCP connect + TLS handshake; sock_read: each read of the answer.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []
        if not http2:
            return
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        backend = GuardedBackend(self.allow, self._resolver, connect_timeout_s)
        # httpcore's pool scans every connection on every request (and every queued request
        # against every connection): past a few dozen connections that scan dominates and, at
        # a few hundred, outruns the timeouts. So a large limit is split over small pools.
        # (With HTTP/2 one connection carries many streams, so a pool stays small anyway.)
        shards = -(-max_connections // _SHARD)
        per_shard = -(-max_connections // shards)
        self._clients = [
            _client(
                ctx, per_shard, True, backend, httpx.Timeout(timeout_s, connect=connect_timeout_s)
            )
            for _ in range(shards)
        ]
        self._busy = [0] * shards  # requests in flight per pool; a request takes the least busy

    def _check_url(self, url: str) -> yarl.URL:
        try:
            u = _parse(url)
            host = u.raw_host
        except (ValueError, TypeError) as exc:
            raise PermanentSendError(f"bad URL {url!r}: {exc}", code="invalid_url") from exc
        if u.scheme not in ("https", "http") or (u.scheme == "http" and not self.allow_http):
            raise PermanentSendError(
                f"URL {url!r}: scheme {u.scheme!r} refused, only https is allowed: fix the URL",
                code="invalid_url",
            )
        if not host or u.raw_user is not None or u.raw_password is not None:
            raise PermanentSendError(
                f"URL {url!r} needs a host and must not carry credentials: fix the URL",
                code="invalid_url",
            )
        if not _HOST.fullmatch(host):
            raise PermanentSendError(f"URL {url!r}: bad host {host!r}", code="invalid_url")
        return u

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed and self._loop is loop:
            return session
        if session is not None and not session.closed:
            # Made in another event loop, which has ended: its connections go with it.
            session.detach()
        connector = GuardedConnector(
            self.allow,
            self._resolver,
            self._connect_timeout_s,
            limit=self.max_connections,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # raw bytes: a small gzip bomb is never inflated
            trust_env=False,
        )
        self._loop = loop
        return self._session

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
                if self._clients:
                    return await self._h2(where, method, url, headers, content, data, auth)
                return await self._h1(where, method, u, headers, content, data, auth)
        except TimeoutError as exc:
            raise RetryableSendError(
                f"{where}: no complete answer within {self.total_timeout_s}s", code="timeout"
            ) from exc

    async def _h1(
        self,
        where: str,
        method: str,
        u: yarl.URL,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        data: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> HttpResponse:
        session = self._session_now()
        try:
            async with session.request(
                method,
                u,
                headers=headers if auth is None else {**(headers or {}), **_basic(auth)},
                data=content if data is None else data,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_CONTENT_TYPE if data is None else None,
            ) as resp:
                body, truncated = await self._read_capped_h1(resp.content)
                if truncated:
                    resp.close()  # the rest is never read: drop the connection
                return HttpResponse(resp.status, resp.headers, body, truncated)
        except RefusedSocketError as exc:
            raise exc.refusal from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedSocketError):
                raise exc.os_error.refusal from exc
            raise _retry(where, exc, "connect_failed", "is the endpoint up?") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            # Raised before anything was sent: no connection within the connect timeout.
            raise _retry(
                where, exc, "connect_timeout", "is the endpoint up, or all connections busy?"
            ) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise _retry(where, exc, "timeout", "the provider is slow") from exc
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentSendError(
                f"bad URL {str(u)!r}: {exc}: fix the URL", code="invalid_url"
            ) from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise _invalid_request(where, exc) from exc
        except aiohttp.ClientError as exc:
            # The connection broke or the answer was not valid HTTP/1.1 (as httpx's
            # RemoteProtocolError): the provider may have the message; retried.
            raise _retry(where, exc, "transport_error", "the connection broke") from exc

    async def _read_capped_h1(self, stream: aiohttp.StreamReader) -> tuple[bytes, bool]:
        cap = self.max_response_bytes
        chunk = await stream.read(cap + 1)
        if len(chunk) > cap:
            return chunk[:cap], True
        if not chunk or stream.at_eof():
            return chunk, False
        chunks = [chunk]
        size = len(chunk)
        while chunk := await stream.read(cap + 1 - size):  # bounded: stops at the cap
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True
        return b"".join(chunks), False

    async def _h2(
        self,
        where: str,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        data: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> HttpResponse:
        i = min(range(len(self._busy)), key=self._busy.__getitem__)
        client = self._clients[i]
        self._busy[i] += 1
        try:
            req = client.build_request(method, url, headers=headers, content=content, data=data)
            resp = await client.send(
                req, stream=True, auth=httpx.BasicAuth(*auth) if auth else None
            )
            try:
                body, truncated = await self._read_capped_h2(resp)
            finally:
                await resp.aclose()
        except httpx.ConnectTimeout as exc:
            raise _retry(where, exc, "connect_timeout", "is the endpoint up?") from exc
        except httpx.ConnectError as exc:
            raise _retry(where, exc, "connect_failed", "is the endpoint up?") from exc
        except httpx.TimeoutException as exc:
            raise _retry(where, exc, "timeout", "the provider is slow") from exc
        except httpx.LocalProtocolError as exc:
            raise _invalid_request(where, exc) from exc
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
        finally:
            self._busy[i] -= 1
        return HttpResponse(resp.status_code, resp.headers, body, truncated)

    async def _read_capped_h2(self, resp: httpx.Response) -> tuple[bytes, bool]:
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
        """Close pooled connections (a later request opens new ones)."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()
        elif session is not None:
            session.detach()  # its event loop has ended, and its connections with it
        for client in self._clients:
            await client.aclose()


def _basic(auth: tuple[str, str]) -> dict[str, str]:
    # As httpx.BasicAuth (UTF-8); aiohttp's BasicAuth is deprecated.
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _invalid_request(where: str, exc: Exception) -> PermanentSendError:
    # Refused by our own HTTP layer before anything went out: the request is malformed.
    return PermanentSendError(
        f"{where}: the request is not valid HTTP ({exc}): fix the header or body the "
        "template or provider settings produce",
        code="invalid_request",
    )


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
