"""End to end: events in three envelope forms become exactly one email each, with
`queued` and `sent` status events and matching audit rows."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import psycopg

from streams.dev.demo import Mode, cloudevent
from tests.integration.pipeline import World, wait_until

MODES: tuple[Mode, ...] = ("structured", "binary", "bare")


def _audit(w: World, ids: list[str]) -> Counter[tuple[str, str]]:
    with psycopg.connect(w.settings.postgres.conninfo()) as conn:
        rows = conn.execute(
            "select notification_id::text, status from audit_log"
            " where notification_id = any(%s::uuid[])",
            (ids,),
        ).fetchall()
    return Counter((r[0], r[1]) for r in rows)


def test_events_become_one_email_each_with_status_and_audit(world: World) -> None:
    w = world
    items: list[tuple[dict[str, Any], Mode]] = []
    for i in range(200):
        doc = w.order_event(i) if i % 2 == 0 else w.user_event(i)
        items.append((doc, MODES[i % 3]))
    expected = w.send(items)

    # Ten more from a third-party client: kcat, structured and bare JSON.
    kcat_ids = []
    lines = []
    for i in range(200, 210):
        doc = w.order_event(i)
        lines.append(json.dumps(doc))
        kcat_ids.append(w.expected_id(doc, "structured"))
    subprocess.run(
        ["kcat", "-b", w.settings.kafka.bootstrap_servers, "-P", "-t", w.order_topic],
        input=("\n".join(lines) + "\n").encode(), check=True, timeout=60,
    )  # fmt: skip
    expected += kcat_ids
    assert len(set(expected)) == 210

    with w.pipeline() as metrics:
        got = w.wait_mail(210)
        wait_until(lambda: metrics.snapshot().get("audited", 0) >= 420, 60, "audit rows")

    assert set(got) == set(expected), "every expected notification arrived"
    assert all(n == 1 for n in got.values()), f"duplicates: {[k for k, v in got.items() if v > 1]}"
    assert w.sink.duplicates == 0

    statuses = w.statuses()
    for nid in expected:
        assert statuses[(nid, "queued")] == 1, nid
        assert statuses[(nid, "sent")] == 1, nid
    assert sum(statuses.values()) == 420

    audit = _audit(w, expected)
    assert audit == statuses, "the audit log holds exactly the status events"


def test_bad_input_goes_to_the_dlq_and_good_input_is_delivered(world: World) -> None:
    w = world
    p = w.producer()
    good: list[tuple[dict[str, Any], Mode]] = []
    bad: list[tuple[bytes, list[tuple[str, bytes]], str]] = [
        (b'{"not json', [], "invalid_event"),
        # a CloudEvent without an id
        (
            json.dumps({"specversion": "1.0", "type": "order.created", "source": "x"}).encode(),
            [],
            "invalid_event",
        ),
        (json.dumps(cloudevent("order.teleported", {"x": 1})).encode(), [], "unknown_type"),
        (b"[1, 2, 3]", [], "invalid_event"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_type", b"order.created")], "invalid_event"),
        (
            json.dumps({**cloudevent("order.created", {}), "time": "yesterday"}).encode(),
            [],
            "invalid_event",
        ),
    ]
    # Interleave: good, bad, good, bad, ... on one partition.
    for i, (value, headers, _) in enumerate(bad):
        good.append((w.order_event(i), MODES[i % 3]))
        w.send(good[-1:])
        p.produce(w.order_topic, value=value, headers=headers, partition=0)
        assert p.flush(30) == 0
    expected = [w.expected_id(d, m, None) for d, m in good if m != "bare"]

    with w.pipeline():
        got = w.wait_mail(len(good))
    assert set(expected) <= set(got)
    assert len(got) == len(good) and all(n == 1 for n in got.values())

    dlq = w.read(w.settings.topics.dlq)
    assert len(dlq) == len(bad)
    reasons = Counter(dict(m.headers())["tidings-dlq-reason"].decode() for m in dlq)
    assert reasons == Counter(r for _, _, r in bad)
    for m in dlq:
        h = dict(m.headers())
        assert h["kafka_dlt-original-topic"].decode() == w.order_topic
        assert h["kafka_dlt-original-partition"] == b"0"
        assert int(h["kafka_dlt-original-offset"]) >= 0
        assert (
            h["kafka_dlt-exception-fqcn"]
            .decode()
            .endswith(("InvalidEventError", "UnknownEventType"))
        )
        assert f"{w.order_topic}/0/" in h["kafka_dlt-exception-message"].decode(), "names where"
    originals = sorted(m.value() for m in dlq)
    assert originals == sorted(v for v, _, _ in bad), "the DLQ keeps the original bytes"
