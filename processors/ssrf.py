"""The SSRF guard in the connection layer: address checks, and the two places that enforce them
for every new connection of an HTTP provider's pool: GuardedConnector (aiohttp, HTTP/1.1) and
GuardedBackend (httpcore, HTTP/2).

For every new connection the guard resolves the host (IP-literal hosts included), refuses it if
*any* resolved address is not globally routable (loopback, private, link-local such as the cloud
metadata address 169.254.169.254, …; IPv4-mapped, 6to4 and NAT64 IPv6 forms are unwrapped
first), and then connects to exactly an address it checked, so DNS rebinding between check and
connect is impossible. TLS SNI, certificate checks and the Host header keep the real hostname.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiohttp
import httpcore
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.tracing import Trace

from processors.exceptions import PermanentSendError, RetryableSendError

__all__ = [
    "GuardedBackend",
    "GuardedConnector",
    "Net",
    "Resolver",
    "SsrfRefusedError",
    "check_address",
    "system_resolver",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) → addresses as strings, in the order to try them.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_MAX_ADDRESSES = 4  # addresses tried per connection: bounds the connect loop


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


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


async def _resolve(resolver: Resolver, host: str, port: int, dns_timeout_s: float) -> list[str]:
    """The addresses of host (an IP literal is its own answer); RetryableSendError on failure."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(dns_timeout_s):
            addresses = await resolver(host, port)
    except (OSError, TimeoutError) as exc:
        raise RetryableSendError(
            f"could not resolve {host!r} ({exc!r}): check the hostname and DNS",
            code="dns_failed",
        ) from exc
    if not addresses:
        raise RetryableSendError(f"{host!r} resolved to no address", code="dns_failed")
    return addresses


def _checked(host: str, addresses: Sequence[str], allow: Iterable[Net]) -> list[str]:
    """Every address checked (one refused refuses the host); the first _MAX_ADDRESSES to try."""
    checked = [check_address(host, a, allow) for a in addresses]
    return checked[:_MAX_ADDRESSES]


class _AiohttpResolver(AbstractResolver):
    """aiohttp's resolver interface over a tidings Resolver (answers are checked later)."""

    def __init__(self, resolver: Resolver, dns_timeout_s: float) -> None:
        self._resolver = resolver
        self._dns_timeout_s = dns_timeout_s

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await _resolve(self._resolver, host, port, self._dns_timeout_s)
        return [_result(host, a, port) for a in addresses]

    async def close(self) -> None:
        pass


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host, "host": address, "port": port, "family": family, "proto": 0,
        "flags": 0,
    }  # fmt: skip


class RefusedSocketError(OSError):
    """The connector's last line: a socket was about to connect to an unchecked address."""

    def __init__(self, refusal: SsrfRefusedError) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector with the guard: the one path to a socket for HTTP/1.1 providers.

    aiohttp connects only to the addresses `_resolve_host` returns (IP-literal hosts bypass the
    resolver there, which is why the check sits on `_resolve_host` and not in the resolver): each
    is checked and replaced by the checked (unwrapped) address. As a second line, the socket
    factory (called with the exact address about to be connected, for every attempt) checks
    again, so a future aiohttp code path that skipped `_resolve_host` would still be refused.
    Closed connections are noticed by the protocol's connection_lost: no liveness polling.
    """

    def __init__(
        self,
        allow: tuple[Net, ...],
        resolver: Resolver,
        dns_timeout_s: float,
        *,
        limit: int,
        ssl: ssl.SSLContext | bool,
    ) -> None:
        self._allow = allow
        super().__init__(
            resolver=_AiohttpResolver(resolver, dns_timeout_s),
            limit=limit,
            limit_per_host=0,
            ssl=ssl,
            socket_factory=self._socket,
        )

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        results = await super()._resolve_host(host, port, traces)
        checked = _checked(host, [r["host"] for r in results], self._allow)
        return [_result(host, a, port) for a in checked]

    def _socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        try:
            check_address(str(sockaddr[0]), str(sockaddr[0]), self._allow)
        except SsrfRefusedError as exc:
            raise RefusedSocketError(exc) from exc
        return socket.socket(family=family, type=type_, proto=proto)


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


class GuardedBackend(httpcore.AsyncNetworkBackend):
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
        addresses = await _resolve(self._resolver, host, port, self._dns_timeout_s)
        checked = _checked(host, addresses, self._allow)
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

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
