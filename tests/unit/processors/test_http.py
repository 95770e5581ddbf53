"""SafeHttp against a real local server: SSRF guard, no redirects, caps, timeouts, status mapping.

A guard fixture makes any connection attempt to a non-loopback address fail the test, so even a
broken SSRF check could never send traffic off this machine.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

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
from tests.peers import guard
from tests.peers.http_server import HttpPeer, Recorded, Reply

LOOPBACK = ("127.0.0.0/8", "::1/128")
only_loopback = guard.only_loopback
pytestmark = pytest.mark.usefixtures("only_loopback")


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


def test_a_large_connection_limit_is_split_over_small_pools_that_share_the_load() -> None:
    # 40 connections: two pools of 20. 40 requests held at the server at once prove both
    # pools are used (one pool would stop at 20), and nothing waits in a pool's queue.
    lock = threading.Lock()
    active = [0, 0]  # now, peak
    release = threading.Event()

    def held(rec: Recorded) -> Reply:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
            if active[0] >= 40:
                release.set()
        release.wait(10)
        with lock:
            active[0] -= 1
        return Reply(200)

    with HttpPeer(held) as p:
        client = SafeHttp(allow=LOOPBACK, allow_http=True, max_connections=40)
        assert len(client._clients) == 2

        async def go() -> list[int]:
            try:
                got = await asyncio.gather(
                    *(client.request("POST", p.url, content=b"{}") for _ in range(40))
                )
                return [r.status for r in got]
            finally:
                await client.close()

        statuses = asyncio.run(go())
    assert statuses == [200] * 40
    assert active[1] == 40


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
