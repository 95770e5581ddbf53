"""No input record can stop a stage: fuzzed and nasty records through every stage's decode path.

For each input, route (`route_record`), audit (`audit_record`, as `AuditStage._batch` calls
it) and deliver (`Notification.decode`, as `DeliverWorker._batch` calls it) either process
it or dead-letter exactly it: one DLQ record whose key and value equal the input byte for
byte (a tombstone stays None), whose headers keep the input's, and name the reason and the
exception class. What route emits must itself pass the audit and deliver decode paths.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from catalog import Catalog, load_catalog
from schemas.notification import Notification
from schemas.settings import TidingsSettings
from streams.runtime.dead_letter import dead_letter, header_map, reason_for
from streams.runtime.records import Out
from streams.stages.audit import audit_record
from streams.stages.deliver_outputs import Item, Outputs
from streams.stages.route import route_record
from tests.fuzz import examples
from tests.unit.catalog.conftest import EXAMPLE

Headers = list[tuple[str, bytes | None]]

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SETTINGS = TidingsSettings()
DLQ = SETTINGS.topics.dlq
FUZZ = hyp_settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@functools.cache
def example_catalog() -> Catalog:
    return load_catalog(EXAMPLE)


# ------------------------------------------------------------------ checks


def assert_dead_letter(o: Out, key: bytes | None, value: bytes | None, headers: Headers) -> str:
    """`o` is the input kept exactly, plus reason and class; returns the reason."""
    assert o.topic == DLQ
    assert o.key == key and type(o.key) is type(key)
    assert o.value == value and type(o.value) is type(value), "the value byte for byte"
    ours = ("kafka_dlt-", "tidings-dlq-")
    assert [h for h in o.headers if not h[0].startswith(ours)] == [
        h for h in headers if not h[0].startswith(ours)
    ], "the input's headers, None and binary values included, in order"
    h = header_map(o.headers)
    assert h["tidings-dlq-reason"]
    assert "." in h["kafka_dlt-exception-fqcn"], "names the exception class"
    return h["tidings-dlq-reason"]


def route(value: bytes | None, headers: Headers, key: bytes | None) -> tuple[list[Out], str]:
    # The topic is a type rules listen to, so bare-JSON events are routed too.
    return route_record(
        topic="user.registered", partition=0, offset=7, timestamp_ms=1_767_600_000_000, key=key,
        value=value, headers=headers, catalog=example_catalog(), settings=SETTINGS, now=NOW,
    )  # fmt: skip


def check_route(value: bytes | None, headers: Headers, key: bytes | None = b"k") -> list[Out]:
    outs, outcome = route(value, headers, key)
    if outcome == "dlq":
        assert len(outs) == 1
        assert_dead_letter(outs[0], key, value, headers)
        return []
    assert outcome in ("routed", "unmatched")
    assert all(o.topic != DLQ for o in outs)
    for o in outs:  # what route emits, audit and deliver take
        if o.topic == SETTINGS.topics.status:
            assert check_audit(o.value, list(o.headers), o.key) == "processed"
        else:
            assert check_deliver(o.value, list(o.headers), o.key) == "processed"
    return outs


def check_audit(value: bytes | None, headers: Headers, key: bytes | None = b"k") -> str:
    # The decode step of AuditStage._batch, with its except clause.
    try:
        audit_record(value)
    except Exception as exc:
        o = dead_letter(
            DLQ, topic="status", partition=0, offset=3, timestamp_ms=None, key=key, value=value,
            headers=headers, error=exc, stage="audit",
            reason=reason_for(exc, ValidationError, "invalid_status_event"),
        )  # fmt: skip
        return assert_dead_letter(o, key, value, headers)
    return "processed"


def check_deliver(value: bytes | None, headers: Headers, key: bytes | None = b"k") -> str:
    # The decode step of DeliverWorker._batch, with its except clause.
    it = Item(("dispatch", 0), 3, 1, key, value, headers, None)
    try:
        Notification.decode(it.value or b"")
    except Exception as exc:
        o = Outputs(SETTINGS).dlq(it, exc, reason_for(exc, ValidationError, "invalid_notification"))
        return assert_dead_letter(o, key, value, headers)
    return "processed"


def check_all(value: bytes | None, headers: Headers, key: bytes | None = b"k") -> None:
    check_route(value, headers, key)
    check_audit(value, headers, key)
    check_deliver(value, headers, key)


# ------------------------------------------------------------------ the fixed corpus


def ce(data: Any, **attrs: Any) -> dict[str, Any]:
    doc = {"specversion": "1.0", "id": "e1", "type": "user.registered", "source": "/accounts"}
    return {**doc, "data": data, **attrs}


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def binary(doc: dict[str, Any]) -> tuple[bytes, Headers]:
    attrs = {k: v for k, v in doc.items() if k != "data"}
    return body(doc["data"]), [(f"ce_{k}", str(v).encode()) for k, v in attrs.items()]


USER = {"email": "ann@example.com", "name": "Ann"}
DEEP_ARRAY = b"[" * 20_000 + b"]" * 20_000
DEEP_OBJECT = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
TEN_MB = body(ce({**USER, "name": "x" * 10_000_000}))
CE_HEADERS = binary(ce(USER))[1]
ODD_HEADERS: Headers = [("bin", b"\xff\xfe\x00"), ("none", None), ("", b""), ("none", None)]

CORPUS: dict[str, tuple[bytes | None, Headers]] = {
    "deep array": (DEEP_ARRAY, []),
    "deep object": (DEEP_OBJECT, []),
    "deep data": (body(ce(0)).replace(b'"data": 0', b'"data": ' + DEEP_ARRAY), []),
    "deep binary body": (DEEP_ARRAY, CE_HEADERS),
    "deep bare": (b'{"x":' + DEEP_ARRAY + b"}", []),
    "10 MB string": (TEN_MB, []),
    "10 MB binary body": (b'"' + b"x" * 10_000_000 + b'"', CE_HEADERS),
    "NaN": (b'{"specversion":"1.0","id":"e","type":"user.registered","source":"s","data":NaN}', []),
    "Infinity": (b'{"a": Infinity}', []),
    "1e999": (body(ce(USER))[:-1] + b', "big": 1e999}', []),
    "10**5000": (b'{"n": ' + b"1" + b"0" * 5000 + b"}", []),
    "lone surrogate": (body(ce({**USER, "name": "\ud800"})), []),
    "lone surrogate in recipient": (body(ce({**USER, "email": "a\udfff@b.c"})), []),
    "duplicate keys": (body(ce(USER))[:-1] + b', "type": "order.created"}', []),
    "tombstone": (None, []),
    "tombstone with headers": (None, ODD_HEADERS),
    "empty": (b"", []),
    "not UTF-8": (b"\xff\xfe{", []),
    "binary headers": (body(ce(USER)), ODD_HEADERS),
    "non-UTF-8 ce header": (body(USER), [*CE_HEADERS, ("ce_subject", b"\xff")]),
    "None ce header": (body(USER), [*CE_HEADERS, ("ce_id", None)]),
    "binary mode": binary(ce(USER)),
    "bare mode": (body(USER), []),
    "structured mode": (body(ce(USER)), []),
    "stale DLQ headers": (b"{", [("kafka_dlt-exception-fqcn", b"x"), ("tidings-dlq-reason", b"y")]),
    "datacontenttype not a string": (body(ce(USER, datacontenttype=5)), []),
    "recipient not a string": (body(ce({**USER, "email": ["a@b.c"]})), []),
    "time far away": (body(ce(USER, time="9999-12-31T23:59:59-23:59")), []),
    "a status event": (b'{"specversion":"1.0","type":"notification.sent","data":{}}', []),
}
for i, data in enumerate([None, True, 0, -1.5, "s", [], {}, [[{"a": [None]}]], 2**63]):
    CORPUS[f"data of JSON type {i}"] = (body(ce(data)), [])
    CORPUS[f"user data field of JSON type {i}"] = (body(ce({**USER, "name": data})), [])


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_nasty_corpus_never_stops_a_stage(name: str) -> None:
    value, headers = CORPUS[name]
    check_all(value, headers, key=None if "tombstone" in name else b"k")


def test_poison_is_dead_lettered_with_its_reason() -> None:
    # Spot checks that the corpus does exercise the DLQ, with the right reasons.
    for name in ("deep array", "deep binary body", "10 MB string", "NaN", "lone surrogate",
                 "duplicate keys", "tombstone", "datacontenttype not a string"):  # fmt: skip
        value, headers = CORPUS[name]
        outs, outcome = route(value, headers, None)
        assert outcome == "dlq", name
        assert assert_dead_letter(outs[0], None, value, headers) == "invalid_event", name
    assert check_audit(None, []) == "invalid_status_event"
    assert check_deliver(DEEP_ARRAY, []) == "invalid_notification"


def test_good_events_are_routed() -> None:
    for value, headers in (CORPUS["structured mode"], CORPUS["binary mode"]):
        assert len(check_route(value, headers)) == 2  # a notification and its `queued` status


def test_an_unexpected_exception_is_an_internal_error_and_memory_error_propagates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streams.stages.route_decide as route_module

    def boom(*_: Any, **__: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(route_module, "decode_event", boom)
    value, headers = CORPUS["structured mode"]
    outs, outcome = route(value, headers, b"k")
    assert outcome == "dlq"
    assert assert_dead_letter(outs[0], b"k", value, headers) == "internal_error"
    assert header_map(outs[0].headers)["kafka_dlt-exception-fqcn"] == "builtins.RecursionError"

    def oom(*_: Any, **__: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(route_module, "decode_event", oom)
    with pytest.raises(MemoryError):
        route(value, headers, b"k")


# ------------------------------------------------------------------ hypothesis

# Every code point, surrogates included; big integers, NaN and infinities.
TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSONISH = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=20,
)  # fmt: skip
HEADERS = st.lists(
    st.tuples(st.sampled_from(["h", "ce_id", "ce_type", "content-type", "x", ""]) | TEXT,
              st.none() | st.binary(max_size=16)),
    max_size=4,
)  # fmt: skip
KEYS = st.none() | st.binary(max_size=8)


def dumps(doc: Any) -> bytes:
    # allow_nan: NaN/Infinity literals; ensure_ascii: lone surrogates as \ud800 escapes.
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def events(draw: st.DrawFn) -> tuple[bytes | None, Headers]:
    """A CloudEvent that rules listen to, with fuzzed data, in a fuzzed mode."""
    email = st.sampled_from(["ann@example.com", "b@example.org"]) | JSONISH
    data = draw(st.fixed_dictionaries({"email": email}, optional={"name": JSONISH, "x": JSONISH}))
    doc = ce(data, type=draw(st.sampled_from(["user.registered", "order.created", "other"])))
    mode = draw(st.sampled_from(["structured", "binary", "bare"]))
    if mode == "binary":
        return dumps(data), binary(doc)[1] + draw(HEADERS)
    return dumps(doc if mode == "structured" else data), draw(HEADERS)


@FUZZ
@given(value=st.none() | st.binary(max_size=256), headers=HEADERS, key=KEYS)
def test_arbitrary_bytes_never_stop_a_stage(
    value: bytes | None, headers: Headers, key: bytes | None
) -> None:
    check_all(value, headers, key)


@FUZZ
@given(doc=JSONISH, headers=HEADERS, key=KEYS)
def test_arbitrary_json_never_stops_a_stage(doc: Any, headers: Headers, key: bytes | None) -> None:
    check_all(dumps(doc), headers, key)


@FUZZ
@given(event=events(), key=KEYS)
def test_fuzzed_cloudevents_never_stop_a_stage(
    event: tuple[bytes | None, Headers], key: bytes | None
) -> None:
    check_all(*event, key)
