"""Every channel end to end: real events through route → deliver → audit, real local peers.

Each test sends one CloudEvent of the example catalog (examples/catalog/rules/*.yaml) through
the in-process pipeline and checks, field by field, what the channel's peer received, then the
pipeline's own record of it: exactly the expected notifications on the status topic (`queued`
then `sent` or `failed`, with channel and provider), the same rows in Postgres `audit_log`, and
exactly the expected dead letters (none, except where a test lists them).

- email: the SMTP sink of the world (one .eml per Message-ID `<notification-id@domain>`).
- sms: Twilio's Messages API served by Stoplight Prism from Twilio's own OpenAPI. Prism does not
  record requests, so the Twilio provider's `base_url` points at a recording HTTP proxy that
  forwards every request unchanged to Prism and relays Prism's answer. Both checks thus apply to
  the one request the pipeline made: Prism validated it against Twilio's spec (a non-conforming
  request gets 401/422, which fails the send: no `sent` status), and the proxy shows the form,
  path and Basic auth field by field, and the SID Prism answered, which must be the `sent`
  status's provider_message_id.
- push: the local FCM HTTP v1 peer (OAuth2 JWT-bearer token endpoint + messages:send), the
  provider built from settings with a service-account key file whose token_uri is the peer.
- inapp: the real `inbox` table and a Redis pub/sub message (subscribed before sending).
- slack + webhook: recording HTTP peers; the Slack rule's hooks.slack.com URL is rewritten in
  this test's catalog copy (before the pipeline starts) to the peer, and the webhook signature is
  verified with the standardwebhooks library.

`user:` recipients are resolved by the recipient directory (Postgres): the push test puts its
users and their FCM tokens there first; `payment-completed`'s user is not in it, so its email leg
is `suppressed` (no-address) while in-app, which needs no address but the id, is delivered.
"""

from __future__ import annotations

import base64
import email
import http.client
import json
import os
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis
from standardwebhooks import Webhook

from schemas.notification import Notification, notification_id
from schemas.recipient import Address, Recipient
from streams.dev.demo import cloudevent
from streams.state.directory import Directory
from tests.integration.pipeline import World, wait_until
from tests.peers.fcm import FcmPeer, make_key
from tests.peers.http_server import HttpPeer, Recorded, Reply
from tests.peers.npm import prism_twilio

pytestmark = pytest.mark.integration

LOCAL_HTTP: dict[str, Any] = {"allow": ["127.0.0.1/32"], "allow_http": True}
EVENT_TIME = "2026-01-05T03:12:00Z"
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/ops-alerts"
SLACK_PATH = "/services/T0000/B0000/ops-alerts"
TWILIO_FROM = "+15005550006"
TWILIO_CALLBACK = "https://tidings.example.com/callbacks/twilio/twilio"
FCM_EMAIL = "tidings@demo-project.iam.gserviceaccount.com"


# ------------------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prism mocking Twilio's OpenAPI (tests/peers/npm.py); its base URL."""
    with prism_twilio(tmp_path_factory.mktemp("prism") / "prism.log") as url:
        yield url


class RecordingProxy(HttpPeer):
    """Records each request (`requests`), forwards it to `target`, relays the answer (`answers`)."""

    # Hop-by-hop headers, and accept-encoding so the relayed body is never compressed.
    _DROP = frozenset({"host", "connection", "keep-alive", "content-length", "accept-encoding",
                       "transfer-encoding"})  # fmt: skip

    def __init__(self, target: str) -> None:
        super().__init__(self._forward)
        u = urlsplit(target)
        assert u.hostname and u.port, target
        self._host, self._port = u.hostname, u.port
        self.answers: list[Reply] = []
        self._answers_lock = threading.Lock()

    def _forward(self, req: Recorded) -> Reply:
        headers = {k: v for k, v in req.headers.items() if k not in self._DROP}
        conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            conn.request(req.method, req.path, body=req.body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            ctype = resp.getheader("content-type") or "application/octet-stream"
        finally:
            conn.close()
        reply = Reply(resp.status, {"Content-Type": ctype}, body)
        with self._answers_lock:
            self.answers.append(reply)
        return reply


def _fcm_key_file(tmp: Path, peer: FcmPeer, private_pem: str) -> Path:
    key_file = tmp / "service-account.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "demo-project",
                "private_key_id": "kid-1",
                "private_key": private_pem,
                "client_email": FCM_EMAIL,
                "token_uri": peer.token_uri,
            }
        )
    )
    return key_file


# ----------------------------------------------------------------------------- pipeline checks


def _event(w: World, etype: str, data: dict[str, Any], tenant: str | None = None) -> dict[str, Any]:
    doc = cloudevent(etype, data, source=f"urn:test:{w.unique}", tenant=tenant,
                     event_id=f"{etype}-{w.unique}")  # fmt: skip
    doc["time"] = EVENT_TIME  # fixed, so rendered times are known
    return doc


def _produce(w: World, doc: dict[str, Any]) -> None:
    # Structured mode: the type comes from the envelope, so any topic the route stage reads works.
    p = w.producer()
    p.produce(w.user_topic, value=json.dumps(doc).encode(), key=doc["id"].encode())
    assert p.flush(30) == 0


def _nid(doc: dict[str, Any], rule: str, recipient: str, channel: str) -> str:
    return notification_id(doc["source"], doc["id"], rule, recipient, channel)


def _audit(w: World, ids: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(w.settings.postgres.conninfo()) as conn:
        return conn.execute(
            "select notification_id::text, status, channel, provider, provider_message_id,"
            " recipient_id, error_code from audit_log where notification_id = any(%s::uuid[])",
            (ids,),
        ).fetchall()


def _wait_audited(w: World, ids: list[str]) -> None:
    """Inside the pipeline: until each notification has its `queued` and final audit row."""
    wait_until(lambda: len(_audit(w, ids)) >= 2 * len(ids), 90, f"audit rows of {ids}")


def _check_outcome(
    w: World,
    *,
    sent: dict[str, tuple[str, str]],
    failed: dict[str, tuple[str, str]] | None = None,
    suppressed: dict[str, tuple[str, str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The status topic holds exactly these notifications, `queued` once and then `sent`
    (channel, provider) or `failed` (channel, error code) once, or only `suppressed`
    (channel, reason); audit_log holds the same. Returns the final status data per id."""
    failed = failed or {}
    suppressed = suppressed or {}
    records = [json.loads(m.value())["data"] for m in w.read(w.settings.topics.status)]
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in records:
        by[d["notification_id"]].append(d)
    assert set(by) == set(sent) | set(failed) | set(suppressed), "exactly the expected ones"
    for nid, (channel, reason) in suppressed.items():
        [d] = by[nid]
        assert (d["status"], d["channel"], d["reason"]) == ("suppressed", channel, reason), d
    final: dict[str, dict[str, Any]] = {}
    for nid, (channel, provider) in sent.items():
        assert Counter(d["status"] for d in by[nid]) == Counter(queued=1, sent=1), by[nid]
        [d] = [d for d in by[nid] if d["status"] == "sent"]
        assert (d["channel"], d["provider"], d["attempt"]) == (channel, provider, 1), d
        assert d["provider_message_id"], d
        final[nid] = d
    for nid, (channel, code) in failed.items():
        assert Counter(d["status"] for d in by[nid]) == Counter(queued=1, failed=1), by[nid]
        [d] = [d for d in by[nid] if d["status"] == "failed"]
        assert (d["channel"], d["error"]["code"]) == (channel, code), d
        final[nid] = d
    # The audit stage wrote exactly these status events, with what the deliver stage reported.
    rows = _audit(w, list(by))
    assert Counter((r[0], r[1]) for r in rows) == Counter(
        (d["notification_id"], d["status"]) for d in records
    )
    for nid, status, channel, provider, msgid, recipient, error_code in rows:
        if status in ("sent", "failed"):
            d = final[nid]
            assert (status, channel, provider, msgid, recipient) == (
                d["status"], d["channel"], d.get("provider"), d.get("provider_message_id"),
                d["recipient_id"],
            )  # fmt: skip
            assert error_code == (d["error"]["code"] if "error" in d else None)
    return final


def _dead_letters(w: World) -> list[tuple[str, str, str]]:
    """(stage, reason, what) of every dead letter: `what` is the notification id of a deliver
    stage letter, else the original topic/partition/offset (so any letter shows in a diff)."""
    out = []
    for m in w.read(w.settings.topics.dlq):
        h = {k: (v or b"").decode() for k, v in m.headers() or ()}
        stage = h["tidings-dlq-stage"]
        what = "/".join(h[f"kafka_dlt-original-{k}"] for k in ("topic", "partition", "offset"))
        if stage == "deliver":
            what = Notification.decode(m.value()).id
        out.append((stage, h["tidings-dlq-reason"], what))
    return out


def _mail(w: World, nid: str) -> EmailMessage:
    [path] = list(w.sink.directory.glob(f"{nid}@*.eml"))
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# ------------------------------------------------------------------------------------- tests


def test_password_reset_email_and_sms_through_twilios_openapi(
    make_world_with: Callable[..., World], prism: str
) -> None:
    account, token = "AC" + uuid.uuid4().hex, "auth-" + uuid.uuid4().hex
    twilio = RecordingProxy(prism)
    with twilio:
        w = make_world_with(
            extra=lambda _: {
                "channels": {
                    "sms": [
                        {
                            "kind": "twilio",
                            "name": "twilio",
                            "account_sid": account,
                            "auth_token": token,
                            "from_number": TWILIO_FROM,
                            "status_callback_url": TWILIO_CALLBACK,
                            "base_url": twilio.url,
                            "http": LOCAL_HTTP,
                        }
                    ]
                }
            }
        )
        address, phone = f"ann.{w.unique}@example.com", "+14155552345"
        reset_url = f"https://shop.example.com/reset?token=tok-{w.unique}"
        doc = _event(w, "user.password-reset", {
            "email": address, "phone": phone, "name": "Ann", "reset_token": f"tok-{w.unique}",
            "expires_in_s": 1800,
        })  # fmt: skip
        mail_id = _nid(doc, "password-reset", address, "email")
        sms_id = _nid(doc, "password-reset", phone, "sms")
        _produce(w, doc)
        with w.pipeline():
            wait_until(lambda: len(twilio.requests) >= 1 and mail_id in w.mail(), 90, "sms+mail")
            _wait_audited(w, [mail_id, sms_id])

    final = _check_outcome(w, sent={mail_id: ("email", "smtp"), sms_id: ("sms", "twilio")})
    assert _dead_letters(w) == []

    # What Twilio received: one conforming request (Prism answered 201 with a message SID).
    [req] = twilio.requests
    [answer] = twilio.answers
    assert answer.status == 201, answer.body[:500]
    sid = json.loads(answer.body)["sid"]
    assert sid.startswith("SM")
    assert final[sms_id]["provider_message_id"] == sid
    assert (req.method, req.path) == ("POST", f"/2010-04-01/Accounts/{account}/Messages.json")
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"{account}:{token}".encode()).decode()
    assert req.headers["authorization"] == f"Basic {basic}"
    assert parse_qs(req.body.decode(), keep_blank_values=True) == {
        "To": [phone],
        "From": [TWILIO_FROM],
        "Body": [f"Your password reset link (valid 30 minutes): {reset_url}"],
        "StatusCallback": [f"{TWILIO_CALLBACK}?nid={sms_id}"],
    }

    # The email, as the SMTP sink stored it.
    assert w.mail() == Counter({mail_id: 1})
    msg = _mail(w, mail_id)
    assert msg["Message-ID"] == f"<{mail_id}@{w.settings.smtp.message_id_domain}>"
    assert msg["To"] == address
    assert msg["From"] == w.settings.smtp.from_address
    assert msg["Subject"] == "Reset your password"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    # The sink stores the message as it came over SMTP: CRLF line ends.
    assert text.get_content().replace("\r\n", "\n") == (
        "Hello Ann,\n\nreset your password with this link within 30 minutes:\n"
        f"{reset_url}\n\nIf you did not ask for this, ignore this email.\n\n"
        "--\nYou receive this email because of activity on your account.\n"
    )
    assert f'<a href="{reset_url}">Reset password</a>' in html.get_content()


def test_order_shipped_goes_to_fcm_push_only(
    make_world_with: Callable[..., World], tmp_path: Path
) -> None:
    private, public = make_key()
    fcm = FcmPeer(public, FCM_EMAIL)
    with fcm:
        key_file = _fcm_key_file(tmp_path, fcm, private)
        w = make_world_with(
            extra=lambda _: {
                "channels": {
                    "push": [
                        {
                            "kind": "fcm",
                            "name": "fcm",
                            "service_account_file": str(key_file),
                            "base_url": fcm.url,
                            "http": LOCAL_HTTP,
                        }
                    ]
                }
            }
        )
        user, order = f"u-{w.unique}", f"A-{w.unique}"
        tracking = f"https://track.example/{order}"
        doc = _event(w, "order.shipped", {
            "order_id": order, "packages": 2, "carrier": "DHL", "tracking_url": tracking,
            "eta": "2026-01-08T12:00:00Z", "customer": {"user_id": user, "name": "Bob"},
        })  # fmt: skip
        # The same for a German-speaking user: the rule's `locale` picks the de templates.
        user_de, order_de = f"u-de-{w.unique}", f"B-{w.unique}"
        doc_de = _event(w, "order.shipped", {
            "order_id": order_de, "packages": 1, "carrier": "DHL", "tracking_url": tracking,
            "eta": "2026-01-08T12:00:00Z",
            "customer": {"user_id": user_de, "name": "Anna", "locale": "de-AT"},
        })  # fmt: skip
        # Their devices, in the recipient directory: one FCM token each.
        directory = Directory(w.settings.postgres.conninfo())
        try:
            directory.import_rows([
                Recipient(id=u, addresses=(Address(channel="push", address=f"tok-{u}",
                                                   platform="fcm"),))
                for u in (user, user_de)
            ])  # fmt: skip
        finally:
            directory.close()
        push_id = _nid(doc, "order-shipped", f"{user}\x1ftok-{user}", "push")
        push_de = _nid(doc_de, "order-shipped", f"{user_de}\x1ftok-{user_de}", "push")
        _produce(w, doc)
        _produce(w, doc_de)
        with w.pipeline():
            wait_until(lambda: len(fcm.messages) >= 2, 90, "the FCM messages")
            _wait_audited(w, [push_id, push_de])

    # first-available: push reaches the user, so neither sms nor email is made.
    final = _check_outcome(w, sent={push_id: ("push", "fcm"), push_de: ("push", "fcm")})
    assert _dead_letters(w) == []
    assert w.mail() == Counter()

    assert fcm.token_requests == 1  # the peer verified the key file's RS256 assertion
    sends = [r for r in fcm.requests if r.path.endswith("/messages:send")]
    assert len(sends) == 2
    send = sends[0]
    assert (send.method, send.path) == ("POST", "/v1/projects/demo-project/messages:send")
    assert send.headers["authorization"].startswith("Bearer ya29.local-")
    by_token = {m["token"]: m for m in fcm.messages}
    german = by_token[f"tok-{user_de}"]["notification"]
    assert german["title"] == f"Deine Bestellung {order_de} ist unterwegs"
    assert german["body"].startswith("1 Paket mit DHL, Zustellung am ")
    message = by_token[f"tok-{user}"]
    assert message == {
        "token": f"tok-{user}",  # the device token the directory holds for the user
        "notification": {
            "title": f"Your order {order} has shipped",
            "body": "2 parcels with DHL, expected January 8, 2026.",
        },
        "android": {"priority": "normal"},
        "data": {"order_id": order, "url": tracking},
    }
    assert final[push_id]["provider_message_id"].startswith("projects/demo-project/messages/0:")


@pytest.fixture
def inbox_cleanup(pg: psycopg.Connection[tuple[object, ...]]) -> Iterator[list[str]]:
    """Recipients whose inbox rows the test made (deleted afterwards: the table is shared)."""
    recipients: list[str] = []
    yield recipients
    pg.execute("DELETE FROM inbox WHERE recipient = ANY(%s)", (recipients,))


def test_payment_completed_lands_in_the_inbox_and_on_redis(
    make_world_with: Callable[..., World],
    pg: psycopg.Connection[tuple[object, ...]],
    redis_client: redis.Redis,
    inbox_cleanup: list[str],
) -> None:
    w = make_world_with()  # channels.inapp defaults to the inbox provider
    user, payment = f"u-{w.unique}", f"pay_{w.unique}"
    inbox_cleanup.append(user)
    doc = _event(w, "payment.completed", {
        "payment_id": payment, "amount": 1234.5, "currency": "EUR", "method": "card",
        "customer": {"user_id": user},
    }, tenant="acme")  # fmt: skip
    inapp_id = _nid(doc, "payment-completed", user, "inapp")
    mail_id = _nid(doc, "payment-completed", user, "email")
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    published: list[dict[str, Any]] = []
    try:
        pubsub.subscribe(f"tidings:inbox:acme:{user}")
        first = pubsub.get_message(timeout=5)
        assert first is not None and first["type"] == "subscribe"

        def got_published() -> bool:
            m = pubsub.get_message(timeout=0.1)
            if m is not None and m["type"] == "message":
                published.append(json.loads(m["data"]))
            return len(published) >= 1

        _produce(w, doc)
        with w.pipeline():
            wait_until(got_published, 90, "the Redis inbox message")
            wait_until(lambda: len(_audit(w, [inapp_id, mail_id])) >= 3, 90, "audit rows")
        extra = pubsub.get_message(timeout=0.5)
        assert extra is None, f"published once only: {extra}"
    finally:
        pubsub.close()

    # The user is not in the directory: no email address, so the email leg is suppressed
    # (a normal outcome, not a dead letter); in-app needs only the id.
    _check_outcome(
        w, sent={inapp_id: ("inapp", "inbox")}, suppressed={mail_id: ("email", "no-address")}
    )
    assert _dead_letters(w) == []
    assert w.mail() == Counter()

    rows = pg.execute(
        "SELECT notification_id, tenant, recipient, category, title, body, data, event_type, "
        "read_at, archived_at, created_at FROM inbox WHERE recipient = %s",
        (user,),
    ).fetchall()
    [row] = rows
    data = {"payment_id": payment, "amount": 1234.5, "currency": "EUR"}
    assert row[:10] == (
        inapp_id, "acme", user, "billing", "Payment received", "€1,234.50 paid by card.", data,
        "payment.completed", None, None,
    )  # fmt: skip
    [message] = published
    created_at = message.pop("created_at")
    assert message == {
        "id": inapp_id, "tenant": "acme", "recipient": user, "category": "billing",
        "title": "Payment received", "body": "€1,234.50 paid by card.", "data": data,
    }  # fmt: skip
    assert isinstance(row[10], datetime)
    assert created_at == row[10].isoformat()


def test_critical_alert_reaches_slack_and_a_signed_webhook(
    make_world_with: Callable[..., World],
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with HttpPeer() as slack, HttpPeer() as pager:
        w = make_world_with(
            extra=lambda _: {
                "channels": {
                    "slack": [
                        {
                            "kind": "slack",
                            "name": "slack",
                            "allowed_hosts": ["127.0.0.1"],
                            "http": LOCAL_HTTP,
                        }
                    ],
                    "webhook": [
                        {
                            "kind": "webhook",
                            "name": "pager",
                            "secrets": [secret],
                            "http": LOCAL_HTTP,
                        }
                    ],
                }
            }
        )
        # The example catalog posts to hooks.slack.com: this world's copy posts to the peer.
        # The catalog is loaded when the pipeline starts, so the edit is in place before.
        rules = w.tmp / "catalog" / "rules" / "infra.yaml"
        text = rules.read_text()
        slack_url = f"{slack.url}{SLACK_PATH}"
        assert text.count(SLACK_URL) == 1
        rules.write_text(text.replace(SLACK_URL, slack_url))
        pager_url = f"{pager.url}/hooks/tidings"
        alert = f"ALRT-{w.unique}"
        doc = _event(w, "infra.alert.database", {
            "alert_id": alert, "service": "orders-db", "severity": "critical",
            "summary": "Primary unreachable for 2 minutes; failover did not start",
            "runbook": "https://runbooks.example.com/orders-db", "pager_url": pager_url,
        }, tenant="platform")  # fmt: skip
        slack_id = _nid(doc, "infra-alert-slack", slack_url, "slack")
        hook_id = _nid(doc, "infra-alert-webhook", pager_url, "webhook")
        _produce(w, doc)
        with w.pipeline():
            wait_until(
                lambda: bool(slack.requests and pager.requests), 90, "slack and webhook posts"
            )
            _wait_audited(w, [slack_id, hook_id])

    final = _check_outcome(w, sent={slack_id: ("slack", "slack"), hook_id: ("webhook", "pager")})
    assert _dead_letters(w) == []
    # Slack gives no message id; the webhook's is its webhook-id: both are the notification id.
    assert final[slack_id]["provider_message_id"] == slack_id
    assert final[hook_id]["provider_message_id"] == hook_id

    summary = "Primary unreachable for 2 minutes; failover did not start"
    [post] = slack.requests
    assert (post.method, post.path) == ("POST", SLACK_PATH)
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {
        "text": f":rotating_light: CRITICAL orders-db: {summary}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "CRITICAL: orders-db"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {
                "type": "context",
                "elements": [
                    # Babel's short English datetime puts a narrow no-break space before AM.
                    {"type": "mrkdwn", "text": f"Alert {alert} since 1/5/26, 3:12\u202fAM UTC"},
                    {"type": "mrkdwn", "text": "<https://runbooks.example.com/orders-db|Runbook>"},
                ],
            },
        ],
    }

    [hook] = pager.requests
    assert (hook.method, hook.path) == ("POST", "/hooks/tidings")
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["webhook-id"] == hook_id
    body = Webhook(secret).verify(hook.body, hook.headers)  # raises unless signed with `secret`
    assert (
        body
        == json.loads(hook.body)
        == {
            "event": "alert.critical",
            "alert_id": alert,
            "service": "orders-db",
            "severity": "critical",
            "summary": summary,
            "started_at": "2026-01-05T03:12:00+00:00",
            "runbook": "https://runbooks.example.com/orders-db",
        }
    )
