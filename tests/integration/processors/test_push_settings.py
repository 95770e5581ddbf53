"""Push and Web Push built only from settings (`build_providers`), sent through the Failover.

FCM and APNs run against the local peers (tests/peers/fcm.py, tests/peers/apns.py), which verify
the signatures made with the keys the registry read from the files named in the settings. A dead
token must raise DeadTokenError *and* leave one row in the real Postgres `dead_tokens` table (the
default hook, PostgresDeadTokens). Web Push runs against web-push-testing inside its own network
namespace: this module is also the driver run there (`python -m … <args>`), and it reaches
Postgres over the local stack's unix socket, which a network namespace does not hide.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processors.channels.push.apns import ApnsProvider
from processors.channels.push.deadtoken import DeadTokenError
from processors.channels.push.fcm import FcmProvider
from processors.channels.push.webpush import WebPushProvider
from processors.exceptions import RetryableSendError
from processors.failover import Failover, SendResult
from processors.registry import build_providers
from schemas.content import PushContent
from schemas.settings import TidingsSettings, load_settings
from streams.state.db import apply_migrations
from tests.peers.apns import ApnsPeer
from tests.peers.fcm import FcmPeer, make_key
from tests.peers.npm import NPM, ROOT, ensure_installed, process
from tests.unit.processors.fakes import notification

PUSH = PushContent(title="Order shipped", body="Grüße: order 42", data={"order": "42"})
EMAIL = "tidings@demo-project.iam.gserviceaccount.com"
TEAM, KID, TOPIC = "TEAM123456", "KEY1234567", "com.example.shop"
LOCAL: dict[str, Any] = {"allow": ["127.0.0.0/8", "::1/128"], "allow_http": True}
WEBPUSH_PORT = 8090

DeadRow = tuple[str, str, str, str, str, uuid.UUID | None, datetime, datetime]


def _ec_pem() -> tuple[str, str]:
    """A fresh P-256 key: (private PKCS#8 PEM, public PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def _push_chain(s: TidingsSettings, channel: str) -> Failover:
    chain = build_providers(s)[channel]
    assert isinstance(chain, Failover)
    return chain


def _dead_rows(pg: psycopg.Connection[Any], token: str) -> list[DeadRow]:
    return pg.execute(
        "SELECT channel, recipient, token, provider, reason, notification_id, first_seen_at, "
        "last_seen_at FROM dead_tokens WHERE token = %s",
        (token,),
    ).fetchall()


@pytest.fixture
def migrated(settings: TidingsSettings, pg: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Migrations applied; yields a list the test appends its dead tokens to (deleted after)."""
    apply_migrations(settings.postgres.conninfo())
    tokens: list[str] = []
    yield tokens
    pg.execute("DELETE FROM dead_tokens WHERE token = ANY(%s)", (tokens,))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for localhost (the APNs peer needs TLS for h2)."""
    d = tmp_path_factory.mktemp("apns-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", "/CN=localhost", "-days", "1",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


# ------------------------------------------------------------------------------------ FCM


def test_fcm_from_settings_sends_and_records_dead_tokens(
    tmp_path: Path, pg: psycopg.Connection[Any], migrated: list[str]
) -> None:
    private, public = make_key()
    live, dead = f"fcm-live-{uuid.uuid4()}", f"fcm-dead-{uuid.uuid4()}"
    migrated.append(dead)
    with FcmPeer(public, EMAIL) as peer:
        key_file = tmp_path / "service-account.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "demo-project",
                    "private_key_id": "kid-1",
                    "private_key": private,
                    "client_email": EMAIL,
                    "token_uri": peer.token_uri,
                }
            )
        )
        s = load_settings(
            channels={
                "push": [
                    {
                        "kind": "fcm",
                        "name": "fcm-main",
                        "service_account_file": str(key_file),
                        "base_url": peer.url,
                        "http": LOCAL,
                        "max_concurrency": 4,
                    }
                ]
            }
        )
        peer.dead_tokens.add(dead)
        ids = [str(uuid.uuid4()) for _ in range(3)]

        async def go() -> tuple[SendResult, list[BaseException]]:
            chain = _push_chain(s, "push")
            assert isinstance(chain.providers[0], FcmProvider)
            assert chain.limits == {"fcm-main": 4}
            try:
                ok = await chain.send_with(
                    notification(ids[0], channel="push", recipient=live, priority="high"), PUSH
                )
                errors: list[BaseException] = []
                for nid in ids[1:]:  # reported twice: still one row
                    try:
                        await chain.send_with(
                            notification(nid, channel="push", recipient=dead), PUSH
                        )
                    except DeadTokenError as exc:
                        errors.append(exc)
                return ok, errors
            finally:
                await chain.close()

        ok, errors = asyncio.run(go())

    assert ok.provider == "fcm-main"
    assert ok.message_id.startswith("projects/demo-project/messages/0:")
    assert peer.token_requests == 1  # the peer verified the RS256 assertion of the key file
    token_req, send_req = peer.requests[0], peer.requests[1]
    assert (token_req.method, token_req.path) == ("POST", "/token")
    assert (send_req.method, send_req.path) == ("POST", "/v1/projects/demo-project/messages:send")
    assert send_req.headers["authorization"].startswith("Bearer ya29.local-")
    assert send_req.headers["content-type"] == "application/json"
    [message] = peer.messages
    assert message["token"] == live
    assert message["notification"] == {"title": "Order shipped", "body": "Grüße: order 42"}
    assert message["android"] == {"priority": "high"}
    assert message["data"] == {"order": "42"}
    assert set(message) == {"token", "notification", "android", "data"}

    assert [type(e) for e in errors] == [DeadTokenError, DeadTokenError]
    assert all(isinstance(e, DeadTokenError) and e.code == "dead_token" for e in errors)
    [row] = _dead_rows(pg, dead)
    assert row[:6] == ("push", dead, dead, "fcm-main", "UNREGISTERED", uuid.UUID(ids[2]))
    assert row[6] < row[7]  # first_seen_at kept from the first report, last_seen_at moved


# ----------------------------------------------------------------------------------- APNs


def test_apns_from_settings_over_http2_and_410_records_the_dead_token(
    tmp_path: Path, tls: tuple[Path, Path], pg: psycopg.Connection[Any], migrated: list[str]
) -> None:
    private, public = _ec_pem()
    p8 = tmp_path / f"AuthKey_{KID}.p8"
    p8.write_text(private)
    live, dead = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2  # hex device tokens, 64 chars
    migrated.append(dead)
    nid, dead_nid = str(uuid.uuid4()), str(uuid.uuid4())
    with ApnsPeer(tls[0], tls[1], public, TEAM, KID) as peer:
        peer.dead_tokens.add(dead)
        s = load_settings(
            channels={
                "push": [
                    {
                        "kind": "apns",
                        "team_id": TEAM,
                        "key_id": KID,
                        "private_key_file": str(p8),
                        "topic": TOPIC,
                        "environment": "sandbox",
                        "base_url": f"https://localhost:{peer.port}",
                        "http": {"allow": ["127.0.0.0/8", "::1/128"], "ca_file": str(tls[0])},
                    }
                ]
            }
        )

        async def go() -> tuple[SendResult, BaseException | None]:
            chain = _push_chain(s, "push")
            assert isinstance(chain.providers[0], ApnsProvider)
            try:
                ok = await chain.send_with(
                    notification(nid, channel="push", recipient=live, priority="critical"), PUSH
                )
                try:
                    await chain.send_with(
                        notification(dead_nid, channel="push", recipient=dead), PUSH
                    )
                except DeadTokenError as exc:
                    return ok, exc
                return ok, None
            finally:
                await chain.close()

        ok, err = asyncio.run(go())

    assert (ok.provider, ok.message_id) == ("apns", nid)
    first = peer.requests[0]
    h = first.headers
    # Pseudo-headers exist only in HTTP/2: the registry asked SafeHttp for h2.
    assert (h[":method"], h[":scheme"], h[":path"]) == ("POST", "https", f"/3/device/{live}")
    assert h[":authority"] == f"localhost:{peer.port}"
    assert (h["apns-topic"], h["apns-push-type"], h["apns-priority"]) == (TOPIC, "alert", "10")
    assert (h["apns-id"], h["content-type"]) == (nid, "application/json")
    assert h["authorization"].startswith("bearer ")
    assert first.claims is not None and first.claims["iss"] == TEAM  # peer verified ES256
    assert json.loads(first.body) == {
        "aps": {"alert": {"title": "Order shipped", "body": "Grüße: order 42"}},
        "order": "42",
    }
    assert isinstance(err, DeadTokenError) and err.code == "dead_token"
    [row] = _dead_rows(pg, dead)
    assert row[:6] == ("push", dead, dead, "apns", "Unregistered", uuid.UUID(dead_nid))


def test_apns_settings_with_a_wrong_ca_fail_at_send_not_silently(
    tmp_path: Path, tls: tuple[Path, Path]
) -> None:
    # Without ca_file the system CAs are used: the peer's self-signed certificate is refused.
    private, public = _ec_pem()
    with ApnsPeer(tls[0], tls[1], public, TEAM, KID) as peer:
        s = load_settings(
            channels={
                "push": [
                    {
                        "kind": "apns",
                        "team_id": TEAM,
                        "key_id": KID,
                        "private_key": private,
                        "topic": TOPIC,
                        "base_url": f"https://localhost:{peer.port}",
                        "http": {"allow": ["127.0.0.0/8", "::1/128"]},
                    }
                ]
            }
        )

        async def go() -> None:
            chain = _push_chain(s, "push")
            try:
                await chain.send_with(notification(channel="push", recipient="ab" * 32), PUSH)
            finally:
                await chain.close()

        with pytest.raises(RetryableSendError, match="CERTIFICATE_VERIFY_FAILED") as info:
            asyncio.run(go())
    assert info.value.code == "connect_failed"
    assert peer.requests == []


# ------------------------------------------------------------------------------- Web Push


def _pg_socket_dir(s: TidingsSettings) -> Path:
    """The local stack's Postgres unix-socket directory (deploy/local/stack.sh: `-k …/run`)."""
    run = (ROOT / s.runtime.local_dir / "postgres" / "run").resolve()
    sock = run / f".s.PGSQL.{s.postgres.port}"
    assert sock.exists(), (
        f"no Postgres unix socket at {sock}: this test reaches Postgres from inside a network "
        "namespace through it; start the local stack with `make up`"
    )
    return run


def test_webpush_from_settings_in_a_network_namespace(
    settings: TidingsSettings, tmp_path: Path, pg: psycopg.Connection[Any], migrated: list[str]
) -> None:
    ensure_installed()
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to isolate web-push-testing"
    vapid = tmp_path / "vapid.pem"
    vapid.write_text(_ec_pem()[0])
    overrides = {
        "postgres": {"host": str(_pg_socket_dir(settings))},
        "channels": {
            "webpush": [
                {
                    "kind": "webpush",
                    "name": "wp",
                    "vapid_private_key_file": str(vapid),
                    "subject": "mailto:ops@tidings.test",
                    "ttl_s": 120,
                    "http": LOCAL,
                }
            ]
        },
    }
    log = tmp_path / "web-push-testing.log"
    nids = [str(uuid.uuid4()), str(uuid.uuid4())]
    proc = subprocess.run(
        [
            unshare,
            "-n",
            "--",
            sys.executable,
            "-m",
            __name__,
            str(log),
            json.dumps(overrides),
            *nids,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"driver failed ({proc.returncode}); unshare -n needs root or CAP_SYS_ADMIN:\n"
        f"{proc.stderr[-3000:]}\n{log.read_text(errors='replace') if log.exists() else ''}"
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    endpoint = out["endpoint"]
    migrated.append(endpoint)
    assert out["provider"] == "wp" and out["limits"] == {"wp": 32}
    assert endpoint.startswith(f"http://localhost:{WEBPUSH_PORT}/notify/")
    [message] = out["messages"]  # what the peer decrypted
    assert json.loads(message) == {
        "id": nids[0],
        "title": "Order shipped",
        "body": "Grüße: order 42",
        "data": {"order": "42"},
    }
    assert out["dead"] == "dead_token"
    [row] = _dead_rows(pg, endpoint)
    reason = "HTTP 410 from the push service"
    assert row[:6] == ("webpush", out["recipient"], endpoint, "wp", reason, uuid.UUID(nids[1]))


async def _webpush_scenario(overrides: dict[str, Any], nids: list[str]) -> dict[str, Any]:
    """Inside the namespace: subscribe, send via the settings-built chain, expire, send again."""
    import httpx  # only the driver needs it

    chain = _push_chain(load_settings(**overrides), "webpush")
    [provider] = chain.providers
    assert isinstance(provider, WebPushProvider)
    out: dict[str, Any] = {"limits": dict(chain.limits)}
    try:
        base = f"http://127.0.0.1:{WEBPUSH_PORT}"
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=10) as api:
            r = await api.post("/subscribe", json={"applicationServerKey": provider.public_key})
            sub = r.json()["data"]
            out["endpoint"] = sub["endpoint"]
            out["recipient"] = json.dumps({"endpoint": sub["endpoint"], "keys": sub["keys"]})
            n = notification(nids[0], channel="webpush", recipient=out["recipient"])
            out["provider"] = (await chain.send_with(n, PUSH)).provider
            r = await api.post("/get-notifications", json={"clientHash": sub["clientHash"]})
            out["messages"] = r.json()["data"]["messages"]
            await api.post(f"/expire-subscription/{sub['clientHash']}")
            try:
                n = notification(nids[1], channel="webpush", recipient=out["recipient"])
                await chain.send_with(n, PUSH)
                out["dead"] = None
            except DeadTokenError as exc:
                out["dead"] = exc.code
    finally:
        await chain.close()
    return out


def _netns_main(argv: list[str]) -> int:
    """Driver entry, run under `unshare -n`: argv = log path, settings overrides JSON, 2 ids."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = NPM / "node_modules/web-push-testing/src/bin/server.js"
    with process(["node", str(server), str(WEBPUSH_PORT)], "Server running", Path(argv[0])):
        result = asyncio.run(_webpush_scenario(json.loads(argv[1]), argv[2:4]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_netns_main(sys.argv[1:]))
