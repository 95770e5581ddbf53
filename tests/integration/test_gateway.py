"""The gateway end to end: API keys made by the real CLI in real Postgres, the gateway stage
run by `run_stages` on a free port (uvicorn), CloudEvents over HTTP with httpx, and the
records read back from a uuid domain topic on the real broker, decoded as route decodes them.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import SecretStr

from schemas.envelope import Origin, decode_event
from schemas.notification import Notification, notification_id
from schemas.settings import GatewaySettings, TidingsSettings
from schemas.status import StatusEvent, build_status
from streams.cli.main import main
from streams.http.gateway import STRUCTURED, sign_recipient_token
from streams.runtime.kafka import ensure_topics
from streams.state.db import apply_migrations
from tests.integration.gateway_helpers import cli_key, forget_gateway_rows, store_inbox_entries
from tests.integration.pipeline import http_stage
from tests.peers.npm import free_port


@dataclass
class Gateway:
    settings: TidingsSettings
    url: str
    topic: str
    tenant: str

    def key(self, *scopes: str, tenant: str | None = None) -> str:
        """A new API key made with `tidings apikeys create` (its stdout is the key)."""
        return make_key(tenant if tenant is not None else self.tenant, scopes)

    def post(
        self, key: str | None, body: object, content_type: str = STRUCTURED,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        h = {"Content-Type": content_type, **(headers or {})}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/events", content=data, headers=h, timeout=30)

    def event(self, **over: object) -> dict[str, object]:
        return {"specversion": "1.0", "id": f"e-{uuid.uuid4().hex[:8]}", "type": self.topic,
                "source": "urn:test:shop", "data": {"total": 12}, **over}  # fmt: skip

    def records(self) -> list[tuple[str, object]]:
        """(key, decoded envelope) of every record on the domain topic so far."""
        out = []
        for m in _read_all(self.settings, self.topic):
            origin = Origin(topic=self.topic, partition=m.partition(), offset=m.offset())
            out.append((m.key().decode(), decode_event(m.value(), m.headers(), origin)))
        return out


_KEYS: list[str] = []
_INBOX_IDS: list[str] = []
SECRET = "s" * 40
RATE = 25  # requests a second per key
PARTITIONS = 2


def _read_all(settings: TidingsSettings, topic: str) -> list[Message]:
    """Every record of `topic` up to its end now (assigned, not subscribed: no group join)."""
    c = Consumer({**settings.kafka.client_config(), "group.id": f"r-{uuid.uuid4().hex[:8]}",
                  "enable.partition.eof": True, "enable.auto.commit": False,
                  "isolation.level": "read_committed"})  # fmt: skip
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[Message] = []
    ended: set[int] = set()
    deadline = time.monotonic() + 30
    while len(ended) < PARTITIONS and time.monotonic() < deadline:
        for m in c.consume(100, 0.5):
            if m.error() is None:
                out.append(m)
            elif m.error().code() == KafkaError._PARTITION_EOF:
                ended.add(m.partition())
    c.close()
    assert len(ended) == PARTITIONS, "the topic's end was not reached within 30 s"
    return out


def make_key(tenant: str, scopes: tuple[str, ...]) -> str:
    key = cli_key(tenant, *scopes)
    _KEYS.append(key.split("_")[1])
    return key


@pytest.fixture(scope="module")
def gw(settings: TidingsSettings) -> Iterator[Gateway]:
    u = uuid.uuid4().hex[:12]
    topic = f"test.gateway.{u}.order"
    port = free_port()
    s = settings.model_copy(update={
        "topics": settings.topics.model_copy(update={
            "events": (topic,), "recipients": f"test.gateway.{u}.recipients",
            "dlq": f"test.gateway.{u}.dlq", "status": f"test.gateway.{u}.status"}),
        "groups": settings.groups.model_copy(update={"recipients": f"recipients-{u}",
                                                     "audit": f"audit-{u}"}),
        "runtime": settings.runtime.model_copy(update={"drain_timeout_s": 5.0}),
        "gateway": GatewaySettings(port=port, key_cache_s=0.0, max_body_bytes=64 * 1024,
                                   max_batch=10, rate_limit_per_s=RATE,
                                   cors_origins=("https://app.example",),
                                   recipient_token_secrets={
                                       f"tenant-{u}": (SecretStr(SECRET),)}),
    })  # fmt: skip
    ensure_topics(
        s, {topic: PARTITIONS, s.topics.recipients: 2, s.topics.dlq: 1, s.topics.status: 2}
    )
    apply_migrations(s.postgres.conninfo())
    url = f"http://127.0.0.1:{port}"
    try:
        with http_stage(s, "gateway", url, also=("recipients", "audit")):
            yield Gateway(s, url, topic, f"tenant-{u}")
    finally:
        made = [topic, s.topics.recipients, s.topics.dlq, s.topics.status]
        forget_gateway_rows(s, made, f"tenant-{u}", _KEYS, _INBOX_IDS)


def _problem(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc: dict[str, object] = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"]
    return doc


def test_structured_batched_and_binary_events_are_on_the_topic_after_202(gw: Gateway) -> None:
    key = gw.key("events:write")
    one = gw.event(subject="order-1")
    r = gw.post(key, one)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": [{"id": one["id"], "type": gw.topic, "topic": gw.topic}]}
    batch = [gw.event(subject="order-2") for _ in range(3)]
    r = gw.post(key, batch, "application/cloudevents-batch+json")
    assert r.status_code == 202 and [a["id"] for a in r.json()["accepted"]] == [
        e["id"] for e in batch
    ]
    ce = {"ce-specversion": "1.0", "ce-id": "bin-1", "ce-type": gw.topic, "ce-source": "urn:x"}
    r = gw.post(key, b'{"name": "Ada"}', "application/json", headers=ce)
    assert r.status_code == 202, r.text
    got = {env.id: (k, env) for k, env in gw.records()}  # type: ignore[attr-defined]
    assert set(got) == {one["id"], *(e["id"] for e in batch), "bin-1"}
    k, env = got[one["id"]]
    assert (k, env.mode, env.tenant, env.data) == (
        "order-1",
        "structured",
        gw.tenant,
        {"total": 12},
    )
    assert got["bin-1"][1].mode == "binary" and got["bin-1"][1].tenant == gw.tenant
    assert got["bin-1"][1].data == {"name": "Ada"}
    # One subject's events keep their order on one partition.
    order2 = [env.id for k, env in gw.records() if k == "order-2"]  # type: ignore[attr-defined]
    assert order2 == [e["id"] for e in batch]


def test_keys_are_checked_and_a_refused_request_produces_nothing(gw: Gateway) -> None:
    before = len(gw.records())
    ev = gw.event()
    _problem(gw.post(None, ev), 401)
    _problem(gw.post("tdk_0123456789ab_" + "a" * 43, ev), 401)
    _problem(gw.post("not-a-key", ev), 401)
    assert "events:write" in str(_problem(gw.post(gw.key("inbox:admin"), ev), 403)["detail"])
    other = gw.post(gw.key("events:write"), gw.event(tenantid="someone-else"))
    assert _problem(other, 403)["pointer"] == "/tenantid"
    # A revoked key stops at once here (key_cache_s = 0).
    key = gw.key("admin")
    assert gw.post(key, gw.event()).status_code == 202
    assert main(["apikeys", "revoke", key.split("_")[1]]) == 0
    _problem(gw.post(key, ev), 401)
    assert len(gw.records()) == before + 1


def test_bad_events_name_the_field_and_nothing_of_the_batch_is_produced(gw: Gateway) -> None:
    key = gw.key("events:write")
    before = len(gw.records())
    doc = _problem(gw.post(key, [gw.event(), gw.event(type="no.such")],
                           "application/cloudevents-batch+json"), 422)  # fmt: skip
    assert doc["pointer"] == "/1/type" and gw.topic in str(doc["detail"])
    assert _problem(gw.post(key, gw.event(time="soon")), 400)["pointer"] == "/"
    _problem(gw.post(key, b"{not json"), 400)
    _problem(gw.post(key, [gw.event()] * 11, "application/cloudevents-batch+json"), 413)
    _problem(gw.post(key, gw.event(data={"pad": "x" * 70_000})), 413)
    _problem(gw.post(key, b"<a/>", "application/xml"), 415)
    assert len(gw.records()) == before


def test_the_openapi_document_describes_the_api(gw: Gateway) -> None:
    doc = httpx.get(f"{gw.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    op = doc["paths"]["/v1/events"]["post"]
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(op["responses"])
    assert {"application/cloudevents+json", "application/cloudevents-batch+json"} <= set(
        op["requestBody"]["content"]
    )
    assert httpx.get(f"{gw.url}/docs", timeout=10).status_code == 200


# ---------------------------------------------------------------- /v1/recipients


def _call(gw: Gateway, method: str, path: str, key: str, body: object = None,
          **params: str) -> httpx.Response:  # fmt: skip
    return httpx.request(method, f"{gw.url}/v1/recipients{path}", json=body, params=params,
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


def _visible(gw: Gateway, key: str, rid: str, want: object, timeout_s: float = 30) -> object:
    """GET the recipient until it equals `want` (None: until it is gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = _call(gw, "GET", f"/{rid}", key)
        got = r.json() if r.status_code == 200 else None
        if (want is None and r.status_code == 404) or (want is not None and got == want):
            return got
        assert time.monotonic() < deadline, f"never visible: {r.status_code} {r.text}"
        time.sleep(0.2)


def test_a_recipient_is_written_through_the_topic_read_changed_and_erased(gw: Gateway) -> None:
    key = gw.key("recipients:write")
    body = {"email": "ada@example.com", "locale": "en-GB", "attributes": {"plan": "pro"},
            "preferences": {"categories": ["shipping"]},
            "addresses": [{"channel": "push", "address": "tok-1", "platform": "fcm"}]}  # fmt: skip
    r = _call(gw, "PUT", "/u-1", key, body)
    assert r.status_code == 202, r.text
    ack = r.json()
    assert (ack["tenant"], ack["id"], ack["type"]) == (
        gw.tenant,
        "u-1",
        "tidings.recipient.upserted",
    )
    assert ack["offset"] >= 0 and "recipients stage" in ack["visible"]
    want = {"tenant": gw.tenant, "id": "u-1", "email": "ada@example.com", "phone": None,
            "locale": "en-GB", "timezone": None, "attributes": {"plan": "pro"},
            "addresses": [{"channel": "push", "address": "tok-1", "platform": "fcm",
                           "app_id": None, "last_seen": None}]}  # fmt: skip
    got = _wait(gw, key, "u-1", lambda d: d["email"] == "ada@example.com")
    assert {k: got[k] for k in want} == want
    assert got["preferences"]["categories"] == ["shipping"]
    assert _call(gw, "GET", "/u-1/preferences", key).json()["categories"] == ["shipping"]
    # A device added, then the preferences replaced, then the device removed.
    dev = {"channel": "push", "address": "tok-2", "platform": "apns", "app_id": "app.x"}
    assert _call(gw, "POST", "/u-1/addresses", key, dev).status_code == 202
    _wait(gw, key, "u-1", lambda d: len(d["addresses"]) == 2)
    r = _call(gw, "PUT", "/u-1/preferences", key, {"channels": ["sms"]})
    assert r.status_code == 202, r.text
    d = _wait(gw, key, "u-1", lambda d: d["preferences"].get("channels") == ["sms"])
    assert len(d["addresses"]) == 2 and d["preferences"].get("categories", []) == []
    r = _call(gw, "DELETE", "/u-1/addresses", key, channel="push", address="tok-1")
    assert r.status_code == 202, r.text
    d = _wait(gw, key, "u-1", lambda d: [a["address"] for a in d["addresses"]] == ["tok-2"])
    assert d["email"] == "ada@example.com", "the rest of the recipient is kept"
    # Erasure.
    assert _call(gw, "DELETE", "/u-1", key).json()["type"] == "tidings.recipient.deleted"
    _visible(gw, key, "u-1", None)


def _wait(gw: Gateway, key: str, rid: str, ok: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        r = _call(gw, "GET", f"/{rid}", key)
        if r.status_code == 200 and ok(r.json()):
            return r.json()
        assert time.monotonic() < deadline, f"not reached: {r.status_code} {r.text}"
        time.sleep(0.2)


def test_bad_recipients_are_refused_before_the_topic(gw: Gateway) -> None:
    key = gw.key("recipients:write")
    doc = _problem(_call(gw, "PUT", "/u-2", key, {"preferences": {"categories": ["nope"]}}), 400)
    assert "nope" in str(doc["detail"]) and "shipping" in str(doc["detail"])
    assert "email" in str(
        _problem(_call(gw, "PUT", "/u-2", key, {"email": "not-mail"}), 400)["detail"]
    )
    assert _problem(_call(gw, "PUT", "/u-2", key, {"id": "u-3"}), 400)["pointer"] == "/id"
    assert _problem(_call(gw, "PUT", "/u-2", key, {"tenant": "x"}), 400)["pointer"] == "/tenant"
    _problem(_call(gw, "PUT", "/u-2/preferences", key, {"channels": ["fax"]}), 400)
    _problem(_call(gw, "POST", "/u-2/addresses", key, {"channel": "fax", "address": "1"}), 400)
    _problem(_call(gw, "GET", "/u-2", key), 404)
    _problem(_call(gw, "PUT", "/u-2/preferences", key, {}), 404)
    _problem(_call(gw, "PUT", "/u-2", gw.key("events:write"), {}), 403)


def test_one_tenants_key_never_sees_anothers_recipients(gw: Gateway) -> None:
    mine = gw.key("recipients:write")
    theirs = gw.key("admin", tenant=f"{gw.tenant}-b")
    assert _call(gw, "PUT", "/shared-id", mine, {"email": "a@example.com"}).status_code == 202
    _wait(gw, mine, "shared-id", lambda d: d["email"] == "a@example.com")
    _problem(_call(gw, "GET", "/shared-id", theirs), 404)
    # Their write of the same id is their own recipient, not mine.
    assert _call(gw, "PUT", "/shared-id", theirs, {"email": "b@example.com"}).status_code == 202
    _wait(gw, theirs, "shared-id", lambda d: d["email"] == "b@example.com")
    assert _call(gw, "GET", "/shared-id", mine).json()["email"] == "a@example.com"


# ---------------------------------------------------------------- /v1/notifications


def _notification(tenant: str, i: int) -> Notification:
    u = uuid.uuid4().hex
    to = f"user{i}@example.com"
    return Notification(
        id=notification_id(f"urn:test:{u}", f"evt-{u}", "welcome", to, "email"),
        event_id=f"evt-{u}", event_source=f"urn:test:{u}", event_type="user.registered",
        tenant=tenant, rule_id="welcome", rule_version=1, template_id="welcome",
        template_version="1", catalog_version="c", channel="email", recipient=to,
        event_time_ms=int(time.time() * 1000) - i * 1000,
    )  # fmt: skip


def _history(gw: Gateway, key: str, path: str = "", **params: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/v1/notifications{path}", params=params,
                     headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip


def test_history_comes_from_the_audit_log_within_the_tenant(gw: Gateway) -> None:
    mine = [_notification(gw.tenant, i) for i in range(5)]
    theirs = _notification(f"{gw.tenant}-b", 9)
    p = Producer(gw.settings.kafka.client_config())
    for n in [*mine, theirs]:
        for status, stage in (("queued", "route"), ("sent", "deliver")):
            st = build_status(n, status, stage=stage)  # type: ignore[arg-type]
            p.produce(gw.settings.topics.status, st.encode(), st.key(), headers=st.headers())
    assert p.flush(30) == 0
    key = gw.key("events:write")
    deadline = time.monotonic() + 60
    while (r := _history(gw, key, f"/{mine[0].id}")).status_code != 200 or len(
        r.json()["statuses"]
    ) < 2:
        assert time.monotonic() < deadline, f"the audit stage never recorded it: {r.text}"
        time.sleep(0.3)
    assert [x["status"] for x in r.json()["statuses"]] == ["queued", "sent"]
    assert r.json()["statuses"][0]["recipient_id"] == "user0@example.com"
    # Another tenant's notification is not this key's, even by its id.
    _problem(_history(gw, key, f"/{theirs.id}"), 404)
    _problem(_history(gw, key, "/not-a-uuid"), 400)
    # Pages of 3, newest first, until done: every row of the tenant once.
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    wait_all = time.monotonic() + 60
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = _history(gw, key, **params).json()
        seen += [(x["notification_id"], x["status"]) for x in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            if len(seen) == 10 or time.monotonic() > wait_all:
                break
            seen, cursor = [], None  # the audit stage is still writing: read again
            time.sleep(0.3)
    assert sorted(seen) == sorted((n.id, s) for n in mine for s in ("queued", "sent"))
    assert len(set(seen)) == 10
    only = _history(gw, key, recipient="user3@example.com", status="sent").json()["items"]
    assert [(x["notification_id"], x["status"]) for x in only] == [(mine[3].id, "sent")]
    _problem(_history(gw, key, cursor="garbage"), 400)
    _problem(_history(gw, gw.key("recipients:write")), 403)
    cancel = httpx.post(f"{gw.url}/v1/notifications/{mine[0].id}/cancel",
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    assert "not built yet" in str(_problem(cancel, 409)["detail"])


# ---------------------------------------------------------------- /v1/inbox


def _inbox_entries(gw: Gateway, recipient: str, n: int) -> list[Notification]:
    notes = store_inbox_entries(gw.settings, gw.tenant, recipient, n)
    _INBOX_IDS.extend(x.id for x in notes)
    return notes


def _me(gw: Gateway, recipient: str) -> dict[str, str]:
    token = sign_recipient_token(gw.settings.gateway, gw.tenant, recipient, 600)
    return {"Authorization": f"Bearer {token}"}


def _inbox(gw: Gateway, me: dict[str, str], method: str = "GET", path: str = "",
           body: object = None, **params: str) -> httpx.Response:  # fmt: skip
    return httpx.request(method, f"{gw.url}/v1/inbox{path}", headers=me, json=body,
                         params=params, timeout=30)  # fmt: skip


def _gateway_statuses(gw: Gateway) -> list[StatusEvent]:
    evs = [StatusEvent.decode(m.value()) for m in _read_all(gw.settings, gw.settings.topics.status)]
    return [e for e in evs if e.source == "tidings/gateway"]


def test_the_inbox_lists_counts_and_marks_as_its_recipient(gw: Gateway) -> None:
    rid = f"user-{uuid.uuid4().hex[:6]}"
    notes = _inbox_entries(gw, rid, 5)
    me = _me(gw, rid)
    page = _inbox(gw, me, limit="3").json()
    assert [x["id"] for x in page["items"]] == [n.id for n in notes[::-1][:3]]  # newest first
    rest = _inbox(gw, me, limit="3", cursor=page["next_cursor"]).json()
    assert [x["id"] for x in rest["items"]] == [notes[1].id, notes[0].id]
    assert rest["next_cursor"] is None
    assert {x["category"] for x in _inbox(gw, me, category="orders").json()["items"]} == {"orders"}
    assert _inbox(gw, me, path="/counts").json() == {"unread": 5, "unseen": 5}
    # Read one: a read status (from its dispatch record), once; read implies seen.
    assert _inbox(gw, me, "POST", f"/{notes[0].id}/read").json()["changed"] == [notes[0].id]
    assert _inbox(gw, me, "POST", f"/{notes[0].id}/read").json()["changed"] == []
    assert _inbox(gw, me, path="/counts").json() == {"unread": 4, "unseen": 4}
    reads = [e for e in _gateway_statuses(gw) if e.data.notification_id == notes[0].id]
    assert [e.data.status for e in reads] == ["seen", "read"], "never seen: read implies it"
    assert (reads[1].data.rule_id, reads[1].data.channel) == ("welcome", "inapp")
    # Seen in bulk, one archived, then everything read.
    r = _inbox(gw, me, "POST", "/seen", {"ids": [n.id for n in notes]}).json()
    assert sorted(r["changed"]) == sorted(n.id for n in notes[1:]) and r["more"] is False
    assert _inbox(gw, me, "POST", f"/{notes[4].id}/archive").json()["changed"] == [notes[4].id]
    assert _inbox(gw, me, path="/counts").json() == {"unread": 3, "unseen": 0}
    assert [x["id"] for x in _inbox(gw, me, filter="archived").json()["items"]] == [notes[4].id]
    assert len(_inbox(gw, me).json()["items"]) == 4, "archived ones are out of the feed"
    r = _inbox(gw, me, "POST", "/read", {"all": True}).json()  # archived ones too
    assert sorted(r["changed"]) == sorted(n.id for n in notes[1:])
    assert _inbox(gw, me, path="/counts").json() == {"unread": 0, "unseen": 0}
    kinds = sorted((e.data.notification_id, e.data.status) for e in _gateway_statuses(gw)
                   if e.data.notification_id in {n.id for n in notes})  # fmt: skip
    want = [(notes[0].id, "seen"), (notes[0].id, "read"), *((n.id, "seen") for n in notes[1:]),
            (notes[4].id, "archived"), *((n.id, "read") for n in notes[1:])]  # fmt: skip
    assert kinds == sorted(want)


def test_counts_equal_the_list_after_concurrent_changes(gw: Gateway) -> None:
    rid = f"user-{uuid.uuid4().hex[:6]}"
    notes = _inbox_entries(gw, rid, 8)
    me = _me(gw, rid)
    rng = random.Random(7)
    calls = [(rng.choice(["read", "unread", "seen", "archive", "unarchive"]), rng.choice(notes).id)
             for _ in range(40)]  # fmt: skip
    with ThreadPoolExecutor(8) as pool:
        done = list(
            pool.map(lambda c: _inbox(gw, me, "POST", f"/{c[1]}/{c[0]}").status_code, calls)
        )
    assert set(done) == {200}
    unread = _inbox(gw, me, filter="unread", limit="200").json()["items"]
    unseen = _inbox(gw, me, filter="unseen", limit="200").json()["items"]
    assert _inbox(gw, me, path="/counts").json() == {"unread": len(unread), "unseen": len(unseen)}


def test_a_token_reads_only_its_own_inbox(gw: Gateway) -> None:
    rid = f"user-{uuid.uuid4().hex[:6]}"
    notes = _inbox_entries(gw, rid, 2)
    other = _me(gw, f"{rid}-other")
    assert _inbox(gw, other).json()["items"] == []
    assert _inbox(gw, other, "POST", f"/{notes[0].id}/read").json()["changed"] == []
    assert _inbox(gw, _me(gw, rid), path="/counts").json()["unread"] == 2, "untouched"
    _problem(_inbox(gw, {}), 401)
    _problem(_inbox(gw, {"Authorization": "Bearer x.y.z"}), 401)
    expired = jwt.encode({"tid": gw.tenant, "sub": rid, "iat": 1, "exp": 2}, SECRET,
                         algorithm="HS256")  # fmt: skip
    assert "expired" in str(
        _problem(_inbox(gw, {"Authorization": f"Bearer {expired}"}), 401)["detail"]
    )
    # An API key is not a recipient token.
    _problem(_inbox(gw, {"Authorization": f"Bearer {gw.key('admin')}"}), 401)


# ---------------------------------------------------------------- limits


def test_a_key_past_its_rate_gets_429_with_retry_after_then_goes_on(gw: Gateway) -> None:
    key = gw.key("events:write")
    codes: list[httpx.Response] = []
    # Bursts of 3 x RATE until one is limited (at most 5): on a loaded machine one burst may
    # spread over more than one window and fit in each.
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            codes += pool.map(lambda _: gw.post(key, gw.event()), range(3 * RATE))
            if any(r.status_code == 429 for r in codes):
                break
    limited = [r for r in codes if r.status_code == 429]
    assert limited, f"no 429 in {len(codes)} requests at {RATE}/s"
    assert all(r.status_code in (202, 429) for r in codes), {r.status_code for r in codes}
    assert sum(r.status_code == 202 for r in codes) >= RATE
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "rate_limit_per_s" in str(_problem(limited[0], 429)["detail"])
    time.sleep(1.1)
    assert gw.post(key, gw.event()).status_code == 202, "the next second is a new window"
    # Another key has its own budget.
    assert gw.post(gw.key("events:write"), gw.event()).status_code == 202


def test_cors_answers_only_the_configured_origins(gw: Gateway) -> None:
    pre = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    ok = httpx.options(f"{gw.url}/v1/events", headers={**pre, "Origin": "https://app.example"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    bad = httpx.options(f"{gw.url}/v1/events", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_bad_input_is_a_4xx_never_a_5xx(gw: Gateway) -> None:
    # A body past max_body_bytes is refused before auth or parsing, on every route.
    big = httpx.put(f"{gw.url}/v1/recipients/x", content=b"{" + b" " * 70_000 + b"}",
                    headers={"Content-Type": "application/json"}, timeout=30)  # fmt: skip
    _problem(big, 413)
    rid = f"user-{uuid.uuid4().hex[:6]}"
    me = _me(gw, rid)
    _problem(_inbox(gw, me, category="a\u0000b"), 400)
    cursor = base64.urlsafe_b64encode(b'["2025-01-01T00:00:00", 1, "sent", 1e400]').decode()
    _problem(_history(gw, gw.key("events:write"), cursor=cursor), 400)
    # A ce-* header without ce-specversion and ce-id is not binary mode, and not ignored.
    r = gw.post(gw.key("events:write"), gw.event(tenantid="victim"), headers={"ce-type": gw.topic})
    _problem(r, 400)
