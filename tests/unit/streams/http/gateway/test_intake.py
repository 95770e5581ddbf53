"""CloudEvents over HTTP → domain-topic records (streams/http/gateway/intake.py); pure: each
accepted record decodes in route exactly as sent."""

from __future__ import annotations

import json

import pytest

from schemas.envelope import Origin, decode_event
from schemas.settings import TidingsSettings
from streams.http.gateway.intake import BATCH, STRUCTURED, events_from_request
from streams.http.gateway.problems import Problem

S = TidingsSettings()
EVENT = {"specversion": "1.0", "id": "e-1", "type": "order.created", "source": "shop",
         "subject": "order-9", "data": {"total": 12}}  # fmt: skip
ORIGIN = Origin(topic="order.created", partition=0, offset=0)
DEEP: list[object] = []
for _ in range(100):
    DEEP = [DEEP]


def _one(body: object, content_type: str = STRUCTURED, tenant: str = "acme") -> object:
    [got] = events_from_request(content_type, {}, json.dumps(body).encode(), tenant=tenant,
                                settings=S)  # fmt: skip
    return got


def test_a_structured_event_goes_to_its_types_topic_keyed_by_subject_with_the_tenant() -> None:
    got = _one(EVENT)
    assert (got.topic, got.key, got.id) == ("order.created", b"order-9", "e-1")  # type: ignore[attr-defined]
    env = decode_event(got.value, list(got.headers), ORIGIN)  # type: ignore[attr-defined]
    assert (env.mode, env.tenant, env.data, env.subject) == (
        "structured",
        "acme",
        {"total": 12},
        "order-9",
    )


def test_without_a_subject_the_key_is_the_id_and_json_content_type_works_too() -> None:
    doc = {k: v for k, v in EVENT.items() if k != "subject"}
    assert _one(doc, "application/json; charset=utf-8").key == b"e-1"  # type: ignore[attr-defined]


def test_a_batch_is_every_event_in_order() -> None:
    docs = [{**EVENT, "id": f"e-{i}"} for i in range(3)]
    got = events_from_request(BATCH, {}, json.dumps(docs).encode(), tenant="acme", settings=S)
    assert [g.id for g in got] == ["e-0", "e-1", "e-2"]


def test_binary_mode_maps_ce_headers_to_the_kafka_binding() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-type": "user.registered",
               "ce-source": "signup", "Content-Type": "application/json"}  # fmt: skip
    [got] = events_from_request("application/json", headers, b'{"name": "Ada"}', tenant="acme",
                                settings=S)  # fmt: skip
    assert got.topic == "user.registered" and got.key == b"b-1"
    env = decode_event(got.value, list(got.headers), Origin(topic="user.registered",
                                                            partition=0, offset=0))  # fmt: skip
    assert (env.mode, env.id, env.tenant, env.data) == ("binary", "b-1", "acme", {"name": "Ada"})


def _problem(body: bytes, content_type: str = STRUCTURED, **kw: object) -> Problem:
    with pytest.raises(Problem) as info:
        events_from_request(content_type, dict(kw.get("headers", {})), body,  # type: ignore[arg-type]
                            tenant="acme", settings=S)  # fmt: skip
    return info.value


@pytest.mark.parametrize(
    ("body", "status", "pointer", "says"),
    [
        (b"{nope", 400, "/", "not UTF-8 JSON"),
        (json.dumps({**EVENT, "id": ""}).encode(), 400, "/", "missing required attribute(s) id"),
        (json.dumps({**EVENT, "specversion": "0.3"}).encode(), 400, "/", "specversion '0.3'"),
        (json.dumps({**EVENT, "time": "yesterday"}).encode(), 400, "/", "not RFC 3339"),
        (json.dumps({"hello": 1}).encode(), 400, "/", "specversion, id, type and source"),
        (json.dumps({**EVENT, "type": "x.y"}).encode(), 422, "/type", "topics.events lists"),
        (json.dumps({**EVENT, "tenantid": "other"}).encode(), 403, "/tenantid", "tenant 'acme'"),
        (json.dumps({**EVENT, "data": DEEP}).encode(), 400, "/", "route.limits.max_depth"),
    ],
)  # fmt: skip
def test_a_bad_event_is_a_problem_naming_the_field(
    body: bytes, status: int, pointer: str, says: str
) -> None:
    p = _problem(body)
    assert (p.status, p.pointer) == (status, pointer) and says in p.detail, p.detail
    assert p.body()["status"] == status and p.body()["title"]


def test_a_bad_event_in_a_batch_is_named_by_its_index() -> None:
    docs = [EVENT, {**EVENT, "type": "nope"}]
    p = _problem(json.dumps(docs).encode(), BATCH)
    assert (p.status, p.pointer) == (422, "/1/type")


def test_a_batch_past_max_batch_and_a_batch_that_is_not_an_array() -> None:
    docs = [EVENT] * (S.gateway.max_batch + 1)
    assert _problem(json.dumps(docs).encode(), BATCH).status == 413
    assert _problem(json.dumps(EVENT).encode(), BATCH).status == 400


def test_another_media_type_is_refused() -> None:
    p = _problem(b"<xml/>", "application/xml")
    assert p.status == 415 and "binary mode" in p.detail


def test_binary_mode_naming_another_tenant_is_refused() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b", "ce-type": "order.created",
               "ce-source": "s", "ce-tenantid": "evil"}  # fmt: skip
    assert _problem(b"{}", "application/json", headers=headers).status == 403


def test_a_ce_header_without_specversion_and_id_is_refused_not_read_as_structured() -> None:
    body = json.dumps({**EVENT, "tenantid": "victim"}).encode()
    p = _problem(body, STRUCTURED, headers={"ce-type": "order.created"})
    assert p.status == 400 and "ce-specversion" in p.detail


def test_rooms_are_unambiguous() -> None:
    from streams.http.gateway.realtime import room_of
    from streams.http.gateway.tokens import RecipientIdentity

    assert room_of(RecipientIdentity("a:b", "c")) != room_of(RecipientIdentity("a", "b:c"))
    assert room_of(RecipientIdentity("-", "x")) != room_of(RecipientIdentity("", "x"))
