"""SafeHttp against a real local server: SSRF guard, no redirects, caps, timeouts, status mapping.

A guard fixture makes any connection attempt to a non-loopback address fail the test, so even a
broken SSRF check could never send traffic off this machine: tests.peers.guard watches httpcore
(HTTP/2 providers), `only_loopback` here adds aiohttp's connects (HTTP/1.1 providers).
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohappyeyeballs
import pytest

from processors.exceptions import PermanentSendError, RetryableSendError
from processors.http import (
    HttpResponse,
    SafeHttp,
    SsrfRefusedError,
    check_address,
    check_status,
    parse_retry_after,
)
from processors.ssrf import GuardedConnector, RefusedSocketError, system_resolver
from tests.peers import guard
from tests.peers.http_server import HttpPeer, Recorded, Reply

LOOPBACK = ("127.0.0.0/8", "::1/128")
pytestmark = pytest.mark.usefixtures("only_loopback")


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """tests.peers.guard's httpcore guard, plus aiohttp's one way to a socket (happy eyeballs)."""
    seen: list[str] = guard.only_loopback.__wrapped__(monkeypatch)  # type: ignore[attr-defined]
    real = aiohappyeyeballs.start_connection

    async def guarded(addr_infos: list[Any], **kw: Any) -> socket.socket:
        for info in addr_infos:
            host = info[4][0]
            seen.append(host)
            assert ipaddress.ip_address(host).is_loopback, f"test tried to connect to {host}"
        return await real(addr_infos, **kw)

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", guarded)
    return seen


@pytest.fixture
def peer() -> Iterator[HttpPeer]:
    with HttpPeer() as p:
        yield p


def call(client: SafeHttp, url: str, **kw: Any) -> HttpResponse:
    async def go() -> HttpResponse:
        try:
            return await client.request("POST", url, content=b"{}", **kw)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:{port}/", "loopback"),
        ("http://10.1.2.3:{port}/", "private-network"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:{port}/", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private-network"),
        ("http://localhost:{port}/", "loopback"),
        ("http://0.0.0.0:{port}/", "unspecified"),
    ],
)
def test_ssrf_refused_before_connecting(
    peer: HttpPeer, only_loopback: list[str], url: str, kind: str
) -> None:
    with pytest.raises(SsrfRefusedError, match=kind) as info:
        call(SafeHttp(allow_http=True), url.format(port=peer.port))
    assert info.value.code == "ssrf_refused"
    assert "globally routable" in str(info.value)
    assert only_loopback == []  # refused before any connection
    assert peer.requests == []


@pytest.mark.parametrize(
    "url",
    ["http://127.1:{port}/", "http://2130706433:{port}/", "http://0x7f.1:{port}/"],
)
def test_legacy_numeric_ipv4_forms_never_connect(
    peer: HttpPeer, only_loopback: list[str], url: str
) -> None:
    # Forms socket would read as 127.0.0.1: aiohttp refuses some as URLs, the guard the rest.
    with pytest.raises(PermanentSendError) as info:
        call(SafeHttp(allow_http=True), url.format(port=peer.port))
    assert info.value.code in ("invalid_url", "ssrf_refused")
    assert only_loopback == []
    assert peer.requests == []


def test_hostname_resolving_to_private_is_refused_without_dns(only_loopback: list[str]) -> None:
    async def evil(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]  # one bad answer is enough to refuse

    with pytest.raises(SsrfRefusedError, match=r"hooks\.evil\.test.*10\.0\.0\.7"):
        call(SafeHttp(resolver=evil), "https://hooks.evil.test/x")
    assert only_loopback == []


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_allow_listed_loopback_connects_with_original_host_header(
    peer: HttpPeer, host: str
) -> None:
    if host == "[::1]":
        with HttpPeer(host="::1") as v6:
            resp = call(SafeHttp(allow=LOOPBACK, allow_http=True), f"http://[::1]:{v6.port}/h")
            assert v6.requests[0].headers["host"] == f"[::1]:{v6.port}"
    else:
        resp = call(SafeHttp(allow=LOOPBACK, allow_http=True), f"http://{host}:{peer.port}/h")
        assert peer.requests[0].headers["host"] == f"{host}:{peer.port}"
    assert resp.status == 200


def test_plain_http_and_credentials_in_url_are_refused() -> None:
    with pytest.raises(PermanentSendError, match="only https"):
        call(SafeHttp(allow=LOOPBACK), "http://127.0.0.1:1/")
    with pytest.raises(PermanentSendError, match="credentials"):
        call(SafeHttp(allow=LOOPBACK), "https://u:p@127.0.0.1:1/")
    with pytest.raises(PermanentSendError, match="scheme 'file'"):
        call(SafeHttp(allow=LOOPBACK), "file:///etc/passwd")
    with pytest.raises(PermanentSendError, match="bad host") as info:
        call(SafeHttp(allow=LOOPBACK), "https://exa mple.com/")
    assert info.value.code == "invalid_url"


def test_redirect_is_not_followed(peer: HttpPeer) -> None:
    peer.default = Reply(302, {"Location": "http://169.254.169.254/"}, b"")
    resp = call(SafeHttp(allow=LOOPBACK, allow_http=True), peer.url)
    assert resp.status == 302
    assert len(peer.requests) == 1
    with pytest.raises(PermanentSendError, match="redirects are never followed") as info:
        check_status(resp, "webhook")
    assert info.value.code == "redirect_refused"


def test_response_body_is_capped(peer: HttpPeer) -> None:
    peer.default = Reply(200, {}, b"x" * 1_000_000)
    resp = call(SafeHttp(allow=LOOPBACK, allow_http=True, max_response_bytes=1000), peer.url)
    assert (resp.status, len(resp.body), resp.truncated) == (200, 1000, True)


def test_slow_answer_times_out_as_retryable(peer: HttpPeer) -> None:
    peer.default = Reply(200, {}, b"late", delay_s=1.0)
    with pytest.raises(RetryableSendError) as info:
        call(SafeHttp(allow=LOOPBACK, allow_http=True, timeout_s=0.3), peer.url)
    assert info.value.code == "timeout"


def test_connection_refused_is_retryable(free_port: int) -> None:
    with pytest.raises(RetryableSendError, match="is the endpoint up") as info:
        call(SafeHttp(allow=LOOPBACK, allow_http=True), f"http://127.0.0.1:{free_port}/")
    assert info.value.code == "connect_failed"


def _resp(status: int, **headers: str) -> HttpResponse:
    import httpx

    return HttpResponse(status, httpx.Headers(headers), b"detail")


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (408, RetryableSendError, "http_408"),
        (429, RetryableSendError, "http_429"),
        (500, RetryableSendError, "http_500"),
        (503, RetryableSendError, "http_503"),
        (400, PermanentSendError, "http_400"),
        (401, PermanentSendError, "http_401"),
        (404, PermanentSendError, "http_404"),
    ],
)
def test_status_mapping(status: int, kind: type[Exception], code: str) -> None:
    check_status(_resp(204), "x")
    with pytest.raises(kind) as info:
        check_status(_resp(status, **{"Retry-After": "7"}), "x")
    assert getattr(info.value, "code", None) == code
    if kind is RetryableSendError:
        assert info.value.retry_after_s == 7.0  # type: ignore[attr-defined]


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:30 GMT", now) == 90.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("100.64.0.1", False),
        ("192.168.1.1", False),
        ("fd00::1", False),
        ("fe80::1%eth0", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 wrapping 10.0.0.1
    ],
)
def test_check_address(address: str, ok: bool) -> None:
    if ok:
        assert check_address("h", address)
    else:
        with pytest.raises(SsrfRefusedError):
            check_address("h", address)


def _peak_in_flight(client: SafeHttp, requests: int, expect_peak: int) -> tuple[list[int], int]:
    """Send `requests` at once to a server that holds each until `expect_peak` are held."""
    lock = threading.Lock()
    active = [0, 0]  # now, peak
    release = threading.Event()

    def held(rec: Recorded) -> Reply:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            if active[0] >= expect_peak:
                release.set()
        release.wait(10)
        with lock:
            active[0] -= 1
        return Reply(200)

    with HttpPeer(held) as p:

        async def go() -> list[int]:
            try:
                got = await asyncio.gather(
                    *(client.request("POST", p.url, content=b"{}") for _ in range(requests))
                )
                return [r.status for r in got]
            finally:
                await client.close()

        statuses = asyncio.run(go())
    return statuses, active[1]


def test_connections_are_limited_per_provider_and_all_of_them_are_used() -> None:
    client = SafeHttp(allow=LOOPBACK, allow_http=True, max_connections=8)
    statuses, peak = _peak_in_flight(client, 30, expect_peak=8)
    assert statuses == [200] * 30
    assert peak == 8  # never more than the limit at once, and the whole limit in use


def test_http2_splits_a_large_connection_limit_over_small_pools_that_share_the_load() -> None:
    # 40 connections: two httpcore pools of 20. 40 requests held at the server at once prove
    # both pools are used (one pool would stop at 20). Plain http: h2 needs TLS, so this runs
    # HTTP/1.1 through the HTTP/2 client's pools.
    client = SafeHttp(allow=LOOPBACK, allow_http=True, max_connections=40, http2=True)
    assert len(client._clients) == 2
    statuses, peak = _peak_in_flight(client, 40, expect_peak=40)
    assert statuses == [200] * 40
    assert peak == 40


def test_no_content_type_is_added_and_forms_are_encoded(peer: HttpPeer) -> None:
    client = SafeHttp(allow=LOOPBACK, allow_http=True)

    async def go() -> None:
        try:
            await client.request("POST", peer.url, content=b"raw")
            await client.request("POST", peer.url, data={"To": "+1 555"}, auth=("ac", "tok"))
        finally:
            await client.close()

    asyncio.run(go())
    raw, form = peer.requests
    assert "content-type" not in raw.headers and raw.body == b"raw"
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.body == b"To=%2B1+555"
    assert form.headers["authorization"] == "Basic YWM6dG9r"
    assert raw.headers["user-agent"].startswith("tidings/")


def test_environment_proxies_are_ignored_and_cookies_never_kept(
    peer: HttpPeer, monkeypatch: pytest.MonkeyPatch, only_loopback: list[str]
) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://10.9.9.9:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    peer.replies.append(Reply(200, {"Set-Cookie": "session=abc; Path=/"}))
    client = SafeHttp(allow=LOOPBACK, allow_http=True)

    async def go() -> None:
        try:
            for _ in range(2):
                await client.request("POST", peer.url, content=b"{}")
        finally:
            await client.close()

    asyncio.run(go())
    assert len(peer.requests) == 2  # straight to the server, not to the proxy
    assert "cookie" not in peer.requests[1].headers
    assert set(only_loopback) == {"127.0.0.1"}


def test_the_connector_refuses_an_unchecked_address_at_the_socket() -> None:
    # The second line behind the resolve-time check: the socket factory sees every address
    # aiohttp is about to connect to.
    async def go() -> None:
        connector = GuardedConnector(
            (ipaddress.ip_network("127.0.0.0/8"),), system_resolver, 1.0, limit=1, ssl=False
        )
        try:
            info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.0.0.1", 80))
            with pytest.raises(RefusedSocketError, match="private-network"):
                connector._socket(info)
            ok = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))
            connector._socket(ok).close()
        finally:
            await connector.close()

    asyncio.run(go())


def test_a_request_header_with_a_newline_is_refused_as_invalid(peer: HttpPeer) -> None:
    with pytest.raises(PermanentSendError) as info:
        call(SafeHttp(allow=LOOPBACK, allow_http=True), peer.url, headers={"x": "a\r\nb: c"})
    assert info.value.code == "invalid_request"
    assert peer.requests == []


def test_a_broken_answer_is_a_transport_error() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/"
        with pytest.raises(RetryableSendError) as info:
            call(SafeHttp(allow=LOOPBACK, allow_http=True), url)
        assert info.value.code == "transport_error"
    finally:
        t.join(5)
        srv.close()


def test_a_client_is_usable_again_after_close_and_in_a_new_event_loop(peer: HttpPeer) -> None:
    client = SafeHttp(allow=LOOPBACK, allow_http=True)
    assert call(client, peer.url).status == 200
    assert call(client, peer.url).status == 200  # call() closes; the next loop reopens


def test_a_compressed_or_broken_answer_is_never_inflated_and_never_escapes(
    peer: HttpPeer,
) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)  # ~5 KB that would inflate to 5 MB
    peer.replies += [
        Reply(200, headers={"Content-Encoding": "gzip"}, body=b"not gzip at all"),
        Reply(200, headers={"Content-Encoding": "gzip"}, body=bomb),
    ]
    client = SafeHttp(allow=LOOPBACK, allow_http=True, max_response_bytes=1024)

    async def go() -> list[HttpResponse]:
        try:
            return [await client.request("POST", peer.url, content=b"{}") for _ in range(2)]
        finally:
            await client.close()

    broken, inflated = asyncio.run(go())
    assert (broken.status, broken.body) == (200, b"not gzip at all")
    assert inflated.truncated and len(inflated.body) == 1024 and inflated.body != b"\0" * 1024
    assert peer.requests[0].headers["accept-encoding"] == "identity"
