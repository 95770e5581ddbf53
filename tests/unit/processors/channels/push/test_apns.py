"""ApnsProvider against a local HTTP/2 TLS peer that verifies the ES256 provider token."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processors.channels.push.apns import ApnsProvider, apns_id
from processors.channels.push.deadtoken import DeadToken, DeadTokenError
from processors.exceptions import PermanentSendError
from processors.http import SafeHttp
from schemas.content import PushContent
from tests.peers.apns import ApnsPeer
from tests.unit.processors.fakes import notification

_KEY = ec.generate_private_key(ec.SECP256R1())
PRIVATE = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC = (
    _KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
TEAM, KID, TOPIC = "TEAM123456", "KEY1234567", "com.example.shop"
DEVICE = "a" * 64
PUSH = PushContent(title="Order shipped", body="On its way", data={"order": "42"})
NID = "6f1b2a52-8e55-4c1e-9c43-1d7f3f2f6a11"


@pytest.fixture
def apns(tls_files: tuple[Path, Path]) -> Iterator[ApnsPeer]:
    with ApnsPeer(*tls_files, PUBLIC, TEAM, KID) as peer:
        yield peer


def provider(peer: ApnsPeer, cert: Path, **kw: object) -> ApnsProvider:
    ctx = ssl.create_default_context(cafile=str(cert))
    http = SafeHttp(allow=("127.0.0.0/8", "::1/128"), http2=True, verify=ctx)
    return ApnsProvider(
        team_id=TEAM, key_id=KID, private_key=PRIVATE, topic=TOPIC, http=http,
        base_url=f"https://localhost:{peer.port}", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def run(p: ApnsProvider, *items: tuple[str, str]) -> list[str]:
    async def go() -> list[str]:
        try:
            return [
                await p.send(
                    notification(nid, channel="push", recipient=dev, priority="high"), PUSH
                )
                for nid, dev in items
            ]
        finally:
            await p.close()

    return asyncio.run(go())


def test_http2_request_with_verified_es256_token(
    apns: ApnsPeer, tls_files: tuple[Path, Path]
) -> None:
    p = provider(apns, tls_files[0])
    ids = run(p, (NID, DEVICE), ("order-42", DEVICE))
    assert ids == [NID, apns_id("order-42")]
    assert p.token_mints == 1
    first = apns.requests[0]
    h = first.headers
    assert (h[":method"], h[":scheme"], h[":path"]) == ("POST", "https", f"/3/device/{DEVICE}")
    assert h[":authority"] == f"localhost:{apns.port}"
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (TOPIC, "alert", "10")
    assert h["apns-id"] == NID
    assert first.claims is not None and first.claims["iss"] == TEAM
    assert json.loads(first.body) == {
        "aps": {"alert": {"title": "Order shipped", "body": "On its way"}},
        "order": "42",
    }


def test_unregistered_410_marks_the_token_dead(
    apns: ApnsPeer, tls_files: tuple[Path, Path]
) -> None:
    dead = "b" * 64
    apns.dead_tokens.add(dead)
    seen: list[DeadToken] = []

    async def hook(d: DeadToken) -> None:
        seen.append(d)

    with pytest.raises(DeadTokenError) as info:
        run(provider(apns, tls_files[0], on_dead_token=hook), (NID, dead))
    assert info.value.code == "dead_token"
    assert [(d.token, d.reason, d.provider) for d in seen] == [(dead, "Unregistered", "apns")]


def test_expired_provider_token_is_renewed_once(
    apns: ApnsPeer, tls_files: tuple[Path, Path]
) -> None:
    apns.expire_next_token = True
    p = provider(apns, tls_files[0])
    assert run(p, (NID, DEVICE)) == [NID]
    assert p.token_mints == 2
    assert len(apns.requests) == 2


def test_wrong_key_is_a_permanent_config_error(
    apns: ApnsPeer, tls_files: tuple[Path, Path]
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p = provider(apns, tls_files[0])
    p._key = other.decode()
    with pytest.raises(PermanentSendError, match="InvalidProviderToken") as info:
        run(p, (NID, DEVICE))
    assert info.value.code == "apns_invalidprovidertoken"


def test_non_hex_token_is_refused_before_sending(
    apns: ApnsPeer, tls_files: tuple[Path, Path]
) -> None:
    with pytest.raises(PermanentSendError, match="not hex"):
        run(provider(apns, tls_files[0]), (NID, "../../etc"))
    assert apns.requests == []
