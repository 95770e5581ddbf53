"""FcmProvider against a local FCM v1 peer that verifies the service-account JWT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from processors.channels.push.deadtoken import DeadToken, DeadTokenError
from processors.channels.push.fcm import FcmProvider, ServiceAccount
from processors.exceptions import PermanentSendError
from processors.http import SafeHttp
from schemas.content import PushContent
from tests.peers.fcm import FcmPeer, make_key
from tests.unit.processors.fakes import FakeClock, notification

EMAIL = "tidings@demo-project.iam.gserviceaccount.com"
KEY = make_key()
PUSH = PushContent(title="Order shipped", body="Order 42 is on its way", data={"order": "42"})


@pytest.fixture
def fcm() -> Iterator[FcmPeer]:
    with FcmPeer(KEY[1], EMAIL) as peer:
        yield peer


def account(peer: FcmPeer, private_pem: str = KEY[0]) -> ServiceAccount:
    return ServiceAccount("demo-project", EMAIL, private_pem, "kid-1", peer.token_uri)


def provider(peer: FcmPeer, **kw: object) -> FcmProvider:
    http = SafeHttp(allow=("127.0.0.0/8",), allow_http=True)
    return FcmProvider(account(peer), base_url=peer.url, http=http, **kw)  # type: ignore[arg-type]


def test_send_uses_oauth_token_and_v1_message_format(fcm: FcmPeer) -> None:
    async def go() -> list[str]:
        p = provider(fcm)
        try:
            return [
                await p.send(notification(f"n{i}", recipient=f"device-{i}", priority="high"), PUSH)
                for i in range(3)
            ]
        finally:
            await p.close()

    names = asyncio.run(go())
    assert all(n.startswith("projects/demo-project/messages/0:") for n in names)
    assert fcm.token_requests == 1  # cached across sends
    first = fcm.messages[0]
    assert first == {
        "token": "device-0",
        "notification": {"title": "Order shipped", "body": "Order 42 is on its way"},
        "android": {"priority": "high"},
        "data": {"order": "42"},
    }
    assert [r.path for r in fcm.requests][1:] == ["/v1/projects/demo-project/messages:send"] * 3


def test_token_is_refetched_after_expiry(fcm: FcmPeer) -> None:
    clock = FakeClock(time.time())  # the peer checks the JWT's exp against real time
    fcm.expires_in = 120  # cached for 120 - 60 s margin

    async def go() -> FcmProvider:
        p = provider(fcm, clock=clock)
        try:
            await p.send(notification("a"), PUSH)
            clock.advance(30)
            await p.send(notification("b"), PUSH)
            clock.advance(31)
            await p.send(notification("c"), PUSH)
        finally:
            await p.close()
        return p

    p = asyncio.run(go())
    assert (p.token_fetches, fcm.token_requests) == (2, 2)


def test_revoked_token_is_refreshed_once(fcm: FcmPeer) -> None:
    async def go() -> None:
        p = provider(fcm)
        try:
            await p.send(notification("a"), PUSH)
            fcm.issued.clear()  # server-side revocation: next send gets 401
            await p.send(notification("b"), PUSH)
        finally:
            await p.close()

    asyncio.run(go())
    assert fcm.token_requests == 2
    assert len(fcm.messages) == 2


def test_unregistered_marks_the_token_dead(fcm: FcmPeer) -> None:
    fcm.dead_tokens.add("gone-device")
    seen: list[DeadToken] = []

    async def hook(dead: DeadToken) -> None:
        seen.append(dead)

    async def go() -> None:
        p = provider(fcm, on_dead_token=hook)
        try:
            await p.send(notification("n-dead", channel="push", recipient="gone-device"), PUSH)
        finally:
            await p.close()

    with pytest.raises(DeadTokenError, match="dead at fcm") as info:
        asyncio.run(go())
    assert info.value.code == "dead_token"
    assert seen == [
        DeadToken("push", "fcm", "gone-device", "gone-device", "UNREGISTERED", "n-dead")
    ]


def test_wrong_key_is_refused_by_the_token_endpoint(fcm: FcmPeer) -> None:
    other = make_key()[0]

    async def go() -> None:
        http = SafeHttp(allow=("127.0.0.0/8",), allow_http=True)
        p = FcmProvider(account(fcm, other), base_url=fcm.url, http=http)
        try:
            await p.send(notification("x"), PUSH)
        finally:
            await p.close()

    with pytest.raises(PermanentSendError, match="Firebase Messaging role") as info:
        asyncio.run(go())
    assert info.value.code == "auth_failed"
    assert fcm.messages == []


def test_bad_key_file_names_the_fix() -> None:
    with pytest.raises(ValueError, match="download a JSON key"):
        ServiceAccount.from_json('{"project_id": "p"}')
