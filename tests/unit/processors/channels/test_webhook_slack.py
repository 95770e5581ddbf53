"""Webhook and Slack providers against a local HTTP server; signatures via standardwebhooks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from processors.channels.slack import SlackProvider
from processors.channels.webhook import WebhookProvider, decode_secret, sign
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.http import SafeHttp, SsrfRefusedError
from processors.provider import Provider
from schemas.content import Content, SlackContent, SmsContent, WebhookContent
from tests.peers.http_server import HttpPeer, Reply
from tests.unit.processors.fakes import notification
from tests.unit.processors.test_http import only_loopback

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
__all__ = ["only_loopback"]  # the fixture: guards httpcore's and aiohttp's connects
pytestmark = pytest.mark.usefixtures("only_loopback")
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


@pytest.fixture
def peer() -> Iterator[HttpPeer]:
    with HttpPeer() as p:
        yield p


def send(provider: Provider, content: Content, **n: Any) -> str:
    async def go() -> str:
        try:
            return await provider.send(notification(**n), content)
        finally:
            await provider.close()

    return asyncio.run(go())


def local() -> SafeHttp:
    return SafeHttp(allow=("127.0.0.0/8",), allow_http=True, timeout_s=5)


def test_webhook_is_signed_and_verifies_with_standardwebhooks(peer: HttpPeer) -> None:
    body = {"order": 42, "name": "Jäne"}
    p = WebhookProvider([SECRET, OLD], http=local())
    msgid = send(p, WebhookContent(body=body), nid="n-42", channel="webhook", recipient=peer.url)
    assert msgid == "n-42"
    [req] = peer.requests
    assert (req.method, req.path) == ("POST", "/")
    assert req.headers["content-type"] == "application/json"
    assert req.headers["webhook-id"] == "n-42"
    assert req.headers["webhook-timestamp"].isdigit()
    sigs = req.headers["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert json.loads(req.body) == body
    # Both the current and the rotated-out secret verify (rotation), a wrong one does not.
    for secret in (SECRET, OLD):
        assert Webhook(secret).verify(req.body, req.headers) == body
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(req.body, req.headers)


def test_sign_matches_the_reference_implementation() -> None:
    from datetime import UTC, datetime

    ts = 1_700_000_000
    ours = sign([decode_secret(SECRET)], "msg_1", ts, b'{"a":1}')
    theirs = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(ts, UTC), '{"a":1}')
    assert ours == theirs


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/",
        "http://localhost:{port}/",
    ],
)
def test_webhook_ssrf_refused_unless_allow_listed(peer: HttpPeer, url: str) -> None:
    p = WebhookProvider([SECRET], http=SafeHttp(allow_http=True, connect_timeout_s=1))
    target = url.format(port=peer.port)
    with pytest.raises(SsrfRefusedError, match="globally routable") as info:
        send(p, WebhookContent(body={}), channel="webhook", recipient=target)
    assert info.value.code == "ssrf_refused"
    assert peer.requests == []


def test_webhook_status_mapping(peer: HttpPeer) -> None:
    peer.replies = [Reply(429, {"Retry-After": "30"}, b"slow down"), Reply(400, {}, b"bad")]
    p = WebhookProvider([SECRET], http=local())
    with pytest.raises(RetryableSendError) as retry:
        send(p, WebhookContent(body={}), channel="webhook", recipient=peer.url)
    assert (retry.value.code, retry.value.retry_after_s) == ("http_429", 30.0)
    p = WebhookProvider([SECRET], http=local())
    with pytest.raises(PermanentSendError, match="HTTP 400") as perm:
        send(p, WebhookContent(body={}), channel="webhook", recipient=peer.url)
    assert perm.value.code == "http_400"


def test_bad_secret_and_wrong_content_are_refused() -> None:
    with pytest.raises(ValueError, match="not base64"):
        WebhookProvider(["whsec_!!!"])
    with pytest.raises(ValueError, match="at least one"):
        WebhookProvider([])
    p = WebhookProvider([SECRET], http=local())
    with pytest.raises(PermanentSendError, match="sends WebhookContent, got SmsContent"):
        send(p, SmsContent(text="x"), channel="webhook", recipient="https://x.test/")


BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Order 42 shipped"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Jane*, it is on its way"}},
]


def test_slack_text_and_blocks_arrive(peer: HttpPeer) -> None:
    p = SlackProvider(http=local(), allowed_hosts=None)
    content = SlackContent(text="Order 42 shipped", blocks=BLOCKS)
    url = f"{peer.url}/services/T000/B000/XXXX"
    assert send(p, content, nid="s-1", channel="slack", recipient=url) == "s-1"
    [req] = peer.requests
    assert req.path == "/services/T000/B000/XXXX"
    assert req.headers["content-type"] == "application/json"
    got = json.loads(req.body)
    assert got["text"] == "Order 42 shipped"
    assert got["blocks"] == BLOCKS
    assert set(got) == {"text", "blocks"}


def test_slack_refuses_foreign_hosts_and_bad_payloads(peer: HttpPeer) -> None:
    p = SlackProvider(http=local())
    with pytest.raises(PermanentSendError, match=r"not one of \[.hooks\.slack\.com.\]"):
        send(p, SlackContent(text="x"), channel="slack", recipient=peer.url)
    with pytest.raises(PermanentSendError, match="blocks") as info:
        send(p, SlackContent(text="x", blocks=[{}] * 51), channel="slack", recipient=peer.url)
    assert info.value.code == "invalid_blocks"
    with pytest.raises(PermanentSendError, match="empty text"):
        send(p, SlackContent(text=" "), channel="slack", recipient=peer.url)
    assert peer.requests == []


def test_slack_error_codes(peer: HttpPeer) -> None:
    peer.replies = [Reply(404, {}, b"channel_not_found"), Reply(503, {}, b"no_service")]
    url = peer.url + "/services/x"
    with pytest.raises(PermanentSendError, match="channel_not_found"):
        send(SlackProvider(http=local(), allowed_hosts=None), SlackContent(text="x"), recipient=url)
    with pytest.raises(RetryableSendError, match="no_service"):
        send(SlackProvider(http=local(), allowed_hosts=None), SlackContent(text="x"), recipient=url)
