"""SSRF-safe async HTTP for every HTTP provider, and the status-code → outcome mapping.

The guard lives in the connection layer, so no request can get around it: httpx's connection
pool gets a network backend that, for every new connection, resolves the host, refuses it if
*any* resolved address is not globally routable (loopback, private, link-local such as the cloud
metadata address 169.254.169.254, …; IPv4-mapped, 6to4 and NAT64 IPv6 forms are unwrapped first),
and then connects to exactly the address it checked, so DNS rebinding between check and connect
is impossible. TLS SNI, certificate checks and the Host header keep the real hostname.
An explicit allow-list of networks exists for tests (`allow=("127.0.0.0/8", "::1/128")`).
Redirects are never followed, proxies from the environment are ignored, every phase has a
timeout, the whole exchange has a deadline, and at most `max_response_bytes` of a body is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from processors.exceptions import PermanentSendError, RetryableSendError

__all__ = [
    "HttpResponse",
    "Resolver",
    "SafeHttp",
    "SsrfRefusedError",
    "check_address",
    "check_status",
    "parse_retry_after",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) → addresses as strings, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_MAX_ADDRESSES = 4  # addresses tried per connection: bounds the connect loop
_USER_AGENT = "tidings/0.1 (+https://github.com/tidings)"


class SsrfRefusedError(PermanentSendError):
    """The target address is not globally routable and not allow-listed: nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="ssrf_refused")


def _unwrap(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _kind(ip: IP) -> str:
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services such as 169.254.169.254 live)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private-network address"
    return "not a globally routable address"


def check_address(host: str, address: str, allow: Iterable[Net] = ()) -> str:
    """The address to connect to (unwrapped) if allowed; raises SsrfRefusedError otherwise."""
    try:
        raw = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError as exc:
        raise SsrfRefusedError(f"host {host!r} resolved to {address!r}, not an IP") from exc
    ip = _unwrap(raw)
    if any(ip in net for net in allow) or ip.is_global:
        # IPv4-mapped: connect over IPv4; 6to4 / NAT64 keep their IPv6 route.
        mapped = isinstance(raw, ipaddress.IPv6Address) and raw.ipv4_mapped is not None
        return str(ip) if mapped else str(raw)
    shown = f"{raw} (= {ip})" if raw != ip else str(ip)
    raise SsrfRefusedError(
        f"refused to connect to {host!r}: it resolves to {shown}, {_kind(ip)}; tidings only "
        "sends to globally routable addresses: use a public endpoint (allow-list a network "
        "only for tests)"
    )


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


def _readable(sock: socket.socket | None) -> bool:
    # An idle pooled connection that is readable was closed by the server (or sent junk):
    # httpcore then drops it. No socket at all counts as closed, as in httpcore.
    if sock is None or sock.fileno() < 0:
        return True
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


# A connection with I/O this recently is not polled for a server-side close (see _Stream).
RECENT_S = 0.25


class _Stream(httpcore.AsyncNetworkStream):
    """A pooled connection that answers httpcore's liveness checks cheaply.

    Before every request httpcore asks *every* idle connection of the pool whether it is
    readable (closed by the server). The anyio stream answered by rebuilding its attribute map
    (getpeername and all), and even a bare poll() per connection per request made the pool
    O(connections) per send: with 256 connections a send cost ~5 ms of CPU and the loop fell
    behind its own timeouts. So the socket is looked up once, and a connection that did I/O in
    the last RECENT_S is taken as open: a server closes a keep-alive connection after its idle
    timeout (seconds), and an explicit `Connection: close` is tracked by h11, not by this check.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._sock = inner.get_extra_info("socket")
        self._last_io = time.monotonic()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        self._last_io = time.monotonic()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)
        self._last_io = time.monotonic()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            if time.monotonic() - self._last_io < RECENT_S:
                return False
            return _readable(self._sock)
        if info == "socket":
            return self._sock
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check every address, connect to a checked one; the one path to a socket."""

    def __init__(self, allow: tuple[Net, ...], resolver: Resolver, dns_timeout_s: float) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow = allow
        self._resolver = resolver
        self._dns_timeout_s = dns_timeout_s

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port)
        checked = [check_address(host, a, self._allow) for a in addresses[:_MAX_ADDRESSES]]
        last: Exception | None = None
        for address in checked:  # bounded by _MAX_ADDRESSES
            try:
                return _Stream(
                    await self._inner.connect_tcp(
                        address, port, timeout=timeout, local_address=local_address,
                        socket_options=socket_options,
                    )
                )  # fmt: skip
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            pass
        try:
            async with asyncio.timeout(self._dns_timeout_s):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise RetryableSendError(
                f"could not resolve {host!r} ({exc!r}): check the hostname and DNS",
                code="dns_failed",
            ) from exc
        if not addresses:
            raise RetryableSendError(f"{host!r} resolved to no address", code="dns_failed")
        return addresses

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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
        transport = httpx.AsyncHTTPTransport(http2=http2, verify=ctx, trust_env=False)
        # httpx exposes no hook for the network backend; swap in a pool that uses ours.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx,
            max_connections=max_connections,
            http2=http2,
            network_backend=_GuardedBackend(
                self.allow, resolver or _system_resolver, connect_timeout_s
            ),
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            headers={"User-Agent": _USER_AGENT},
        )

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
                req = self._client.build_request(
                    method, u, headers=headers, content=content, data=data
                )
                resp = await self._client.send(
                    req, stream=True, auth=httpx.BasicAuth(*auth) if auth else None
                )
                try:
                    body, truncated = await self._read_capped(resp)
                finally:
                    await resp.aclose()
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
        except httpx.TransportError as exc:
            raise _retry(where, exc, "transport_error", "the connection broke") from exc
        return HttpResponse(resp.status_code, resp.headers, body, truncated)

    async def _read_capped(self, resp: httpx.Response) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():  # bounded: stops at the cap
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_response_bytes:
                return b"".join(chunks)[: self.max_response_bytes], True
        return b"".join(chunks), False

    async def close(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()


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
