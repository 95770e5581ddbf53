"""schemathesis over the live gateway: every operation of its own /openapi.json, fuzzed with
valid and invalid requests (issue 15). The gateway stage runs as in test_gateway.py
(run_stages, uvicorn on a free port, real Kafka, Postgres and Redis, the recipients and audit
stages beside it); the API key is made by the real CLI, the inbox's token signed as a
tenant's backend would.

Every answer must be no 5xx, of a documented status and content type, with headers and a
body that conform to the schema. Rows are seeded (a recipient, inbox entries, a notification's
history) so that reads answer 200 with bodies to validate, not only 404s. Bounded: a fixed
seed, derandomized, at most MAX_EXAMPLES generated cases per operation (plus schemathesis'
coverage cases), each request at most REQUEST_TIMEOUT_S; the file takes well under a minute.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from confluent_kafka import Producer
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from schemas.notification import Notification, notification_id
from schemas.settings import GatewaySettings, TidingsSettings
from schemas.status import build_status
from streams.http.gateway import STRUCTURED, sign_recipient_token
from streams.runtime.kafka import ensure_topics
from streams.state.db import apply_migrations
from tests.integration.gateway_helpers import cli_key, forget_gateway_rows, store_inbox_entries
from tests.integration.pipeline import http_stage
from tests.peers.npm import free_port

MAX_EXAMPLES = 50  # generated cases per operation (the fuzzing phase)
REQUEST_TIMEOUT_S = 10.0
SEED = 15
RATE = 100_000  # requests a second per key: the limiter runs, 429s never crowd out the rest
SECRET = "s" * 40
RECIPIENT = "ann"  # the recipient the inbox token speaks for, and a recipient in the directory

_KEYS: list[str] = []  # prefixes of the keys made here (deleted at the end)
_CALLS: Counter[str] = Counter()  # operation label -> requests made with its own method


@dataclass
class Live:
    settings: TidingsSettings
    url: str
    tenant: str
    admin_key: str
    inbox_token: str
    inbox_ids: list[str]
    history_id: str  # a notification of the tenant with a `queued` and a `sent` status

    def auth(self, path: str) -> dict[str, str]:
        """The inbox authenticates a recipient token, every other route an API key (admin)."""
        token = self.inbox_token if path.startswith("/v1/inbox") else self.admin_key
        return {"Authorization": f"Bearer {token}"}


def _make_key(tenant: str, *scopes: str) -> str:
    key = cli_key(tenant, *scopes)
    _KEYS.append(key.split("_")[1])
    return key


def _inbox_entries(s: TidingsSettings, tenant: str, n: int) -> list[str]:
    """Real inbox rows of RECIPIENT, so the inbox routes answer rows, not only 404s."""
    return [x.id for x in store_inbox_entries(s, tenant, RECIPIENT, n)]


def _seed_recipient(url: str, key: str) -> None:
    """RECIPIENT in the directory (through the topic and the recipients stage)."""
    h = {"Authorization": f"Bearer {key}"}
    body = {"email": "ann@example.com", "locale": "en"}
    r = httpx.put(f"{url}/v1/recipients/{RECIPIENT}", json=body, headers=h, timeout=30)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/v1/recipients/{RECIPIENT}", headers=h, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the recipients stage never applied the seed"
        time.sleep(0.2)


def _seed_history(s: TidingsSettings, url: str, key: str, tenant: str) -> str:
    """A notification's `queued` and `sent` statuses on the status topic, recorded by the
    audit stage: the history routes answer real rows. Returns its id."""
    u = uuid.uuid4().hex
    n = Notification(
        id=notification_id(f"urn:test:{u}", f"evt-{u}", "welcome", "ann@example.com", "email"),
        event_id=f"evt-{u}", event_source=f"urn:test:{u}", event_type="user.registered",
        tenant=tenant, rule_id="welcome", rule_version=1, template_id="welcome",
        template_version="1", catalog_version="c", channel="email", recipient="ann@example.com",
        event_time_ms=int(time.time() * 1000),
    )  # fmt: skip
    p = Producer(s.kafka.client_config())
    for status, stage in (("queued", "route"), ("sent", "deliver")):
        st = build_status(n, status, stage=stage)  # type: ignore[arg-type]
        p.produce(s.topics.status, st.encode(), st.key(), headers=st.headers())
    assert p.flush(30) == 0
    h = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(f"{url}/v1/notifications/{n.id}", headers=h, timeout=30)
        if r.status_code == 200 and len(r.json()["statuses"]) == 2:
            return n.id
        assert time.monotonic() < deadline, f"the audit stage never recorded it: {r.text}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live(settings: TidingsSettings) -> Iterator[Live]:
    u = uuid.uuid4().hex[:12]
    tenant = f"tenant-{u}"
    topic = f"test.gateway-st.{u}.order"
    port = free_port()
    s = settings.model_copy(update={
        "topics": settings.topics.model_copy(update={
            "events": (topic,), "recipients": f"test.gateway-st.{u}.recipients",
            "dlq": f"test.gateway-st.{u}.dlq", "status": f"test.gateway-st.{u}.status",
            "notify": f"test.gateway-st.{u}.notify"}),
        "groups": settings.groups.model_copy(update={"recipients": f"recipients-{u}",
                                                     "audit": f"audit-{u}"}),
        "runtime": settings.runtime.model_copy(update={"drain_timeout_s": 5.0}),
        "gateway": GatewaySettings(port=port, key_cache_s=0.0, max_body_bytes=64 * 1024,
                                   max_batch=10, rate_limit_per_s=RATE,
                                   recipient_token_secrets={tenant: (SecretStr(SECRET),)}),
    })  # fmt: skip
    made = {topic: 2, s.topics.recipients: 2, s.topics.dlq: 1, s.topics.status: 2,
            s.topics.notify: 2}  # fmt: skip
    ensure_topics(s, made)
    apply_migrations(s.postgres.conninfo())
    url = f"http://127.0.0.1:{port}"
    inbox_ids: list[str] = []
    try:
        inbox_ids += _inbox_entries(s, tenant, 3)
        with http_stage(s, "gateway", url, also=("recipients", "audit")):
            key = _make_key(tenant, "admin")
            _seed_recipient(url, key)
            history_id = _seed_history(s, url, key, tenant)
            token = sign_recipient_token(s.gateway, tenant, RECIPIENT, 600)
            yield Live(s, url, tenant, key, token, inbox_ids, history_id)
    finally:
        forget_gateway_rows(s, list(made), tenant, _KEYS, inbox_ids)
        r = redis.Redis.from_url(s.redis.url.get_secret_value())
        try:  # the Idempotency-Keys POST /v1/notify was sent (kept 24 h otherwise)
            names = list(r.scan_iter(f"tidings:idem:{tenant}:*", count=1000))
            if names:
                r.delete(*names)
        finally:
            r.close()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> schemathesis.BaseSchema:
    """The live gateway's own /openapi.json, with the run's bounds and checks."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": live.url,
        "request-timeout": REQUEST_TIMEOUT_S,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none"},
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        },
    })  # fmt: skip
    return schemathesis.openapi.from_url(
        f"{live.url}/openapi.json", config=config, timeout=REQUEST_TIMEOUT_S
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _nodeid_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy schema reads (and rewrites) `Function._nodeid`, which pytest
    # 9.2 no longer has (it keeps `_id`): give it the node id it expects.
    request.node._nodeid = request.node.nodeid


def _call(
    api: schemathesis.BaseSchema, live: Live, method: str, path: str, want: int, **kw: Any
) -> Any:
    """One explicit request of the operation (`kw`: Case's path_parameters, query, body),
    checked as the fuzzed ones are; it must answer `want`. Returns the answer's JSON."""
    case = api[path][method].Case(**kw)
    r = case.call_and_validate(headers=live.auth(path))
    assert r.status_code == want, r.text
    return r.json()


def test_the_seeded_rows_are_answered_as_documented(
    api_schema: schemathesis.BaseSchema, live: Live
) -> None:
    """The answers fuzzing rarely reaches (a 2xx with a body) conform to their schemas."""
    rid = {"path_parameters": {"rid": RECIPIENT}}
    assert _call(api_schema, live, "GET", "/v1/recipients/{rid}", 200, **rid)["id"] == RECIPIENT
    _call(api_schema, live, "GET", "/v1/recipients/{rid}/preferences", 200, **rid)
    _call(api_schema, live, "GET", "/v1/recipients/{rid}/presence", 200, **rid)
    _call(api_schema, live, "PUT", "/v1/recipients/{rid}/preferences", 202, **rid,
          body={"channels": ["email"]})  # fmt: skip
    _call(api_schema, live, "POST", "/v1/recipients/{rid}/addresses", 202, **rid,
          body={"channel": "push", "address": "tok-1", "platform": "fcm"})  # fmt: skip
    nid = {"path_parameters": {"nid": live.history_id}}
    got = _call(api_schema, live, "GET", "/v1/notifications/{nid}", 200, **nid)
    assert [x["status"] for x in got["statuses"]] == ["queued", "sent"]
    page = _call(api_schema, live, "GET", "/v1/notifications", 200, query={"limit": 1})
    assert len(page["items"]) == 1 and page["next_cursor"]
    _call(api_schema, live, "GET", "/v1/notifications", 200, query={"cursor": page["next_cursor"]})
    inbox = _call(api_schema, live, "GET", "/v1/inbox", 200, query={"limit": 2})
    assert len(inbox["items"]) == 2 and inbox["next_cursor"]
    _call(api_schema, live, "GET", "/v1/inbox", 200, query={"cursor": inbox["next_cursor"]})
    assert _call(api_schema, live, "GET", "/v1/inbox/counts", 200)["unread"] == 3
    one = {"path_parameters": {"nid": live.inbox_ids[0], "action": "read"}}
    assert _call(api_schema, live, "POST", "/v1/inbox/{nid}/{action}", 200, **one)["changed"]
    _call(api_schema, live, "POST", "/v1/inbox/{action}", 200,
          path_parameters={"action": "seen"}, body={"all": True})  # fmt: skip
    trigger = {"rule": "welcome", "recipients": ["ann@example.com"], "data": {"name": "Ann"}}
    _call(api_schema, live, "POST", "/v1/notify", 202, body=trigger)
    event = {"specversion": "1.0", "id": "e-1", "type": live.settings.topics.events[0],
             "source": "urn:test:shop", "data": {"total": 12}}  # fmt: skip
    _call(api_schema, live, "POST", "/v1/events", 202, body=event, media_type=STRUCTURED)


def test_input_schemathesis_does_not_send_is_a_documented_4xx(
    api_schema: schemathesis.BaseSchema, live: Live
) -> None:
    """schemathesis leaves control characters out of paths and sends bodies it can encode;
    these were 500 (a NUL in a recipient id) and a non-problem 400 (a body not UTF-8)."""
    url, path = live.url, "/v1/recipients/{rid}"
    for sub in ("", "/preferences"):
        r = httpx.get(f"{url}/v1/recipients/a%00b{sub}", headers=live.auth(path), timeout=30)
        assert r.status_code == 400 and r.json()["pointer"] == "/path/rid", r.text
        api_schema[path + sub]["GET"].validate_response(r)
    r = httpx.put(f"{url}/v1/recipients/x", content=b"\xff{", headers={
        **live.auth(path), "Content-Type": "application/json"}, timeout=30)  # fmt: skip
    assert r.headers["content-type"] == "application/problem+json", r.text
    assert r.status_code == 400 and r.json()["pointer"] == "/body", r.text
    api_schema[path]["PUT"].validate_response(r)


@pytest.mark.timeout(170)
@schema.parametrize()
@settings(
    deadline=timedelta(seconds=2 * REQUEST_TIMEOUT_S),
    suppress_health_check=[HealthCheck.too_slow],  # each example is a real HTTP request
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, live: Live) -> None:
    """No 5xx; every status, content type, header and body as the OpenAPI document says."""
    if case.method.upper() == case.operation.method.upper():  # not a 405 probe of another
        _CALLS[case.operation.label] += 1
    case.call_and_validate(headers=live.auth(case.path))


def test_every_operation_of_the_document_was_exercised(live: Live) -> None:
    """The test above ran (this file runs in order) over every operation of the document,
    each taking input with many requests of its own method: nothing was left out or skipped."""
    doc = httpx.get(f"{live.url}/openapi.json", timeout=10).json()
    ops = {f"{m.upper()} {p}": op for p, by_method in doc["paths"].items()
           for m, op in by_method.items()}  # fmt: skip
    assert len(ops) >= 15, sorted(ops)
    assert set(_CALLS) == set(ops), (sorted(set(ops) - set(_CALLS)), sorted(_CALLS))
    varied = {name for name, op in ops.items() if op.get("parameters") or op.get("requestBody")}
    few = {name: n for name, n in _CALLS.items() if n < (10 if name in varied else 1)}
    assert not few, f"operations hardly exercised: {few}"
