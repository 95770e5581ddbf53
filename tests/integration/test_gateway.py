"""The gateway end to end: API keys made by the real CLI in real Postgres, the gateway stage
run by `run_stages` on a free port (uvicorn), CloudEvents over HTTP with httpx, and the
records read back from a uuid domain topic on the real broker, decoded as route decodes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.envelope import Origin, decode_event
from schemas.settings import GatewaySettings, TidingsSettings
from streams.cli.main import main
from streams.http.gateway import STRUCTURED
from streams.runtime.kafka import ensure_topics
from streams.state.db import apply_migrations
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
    import contextlib
    import io

    out = io.StringIO()
    argv = ["apikeys", "create", tenant, *[a for s in scopes for a in ("--scope", s)]]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    key = out.getvalue().strip()
    _KEYS.append(key.split("_")[1])
    return key


@pytest.fixture(scope="module")
def gw(settings: TidingsSettings) -> Iterator[Gateway]:
    u = uuid.uuid4().hex[:12]
    topic = f"test.gateway.{u}.order"
    port = free_port()
    s = settings.model_copy(update={
        "topics": settings.topics.model_copy(update={"events": (topic,)}),
        "gateway": GatewaySettings(port=port, key_cache_s=0.0, max_body_bytes=64 * 1024,
                                   max_batch=10),
    })  # fmt: skip
    ensure_topics(s, {topic: PARTITIONS})
    apply_migrations(s.postgres.conninfo())
    url = f"http://127.0.0.1:{port}"
    try:
        with http_stage(s, "gateway", url):
            yield Gateway(s, url, topic, f"tenant-{u}")
    finally:
        admin = AdminClient(s.kafka.client_config())
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(timeout=30)
        import psycopg

        with psycopg.connect(s.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("delete from api_keys where prefix = any(%s)", (_KEYS,))


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
