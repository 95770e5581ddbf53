"""`tidings catalog diff` against a uuid topic holding events this test produced."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.settings import TidingsSettings
from streams.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog"


def event(i: int, kind: str) -> dict[str, object]:
    data: dict[str, object] = {
        "order.created": {
            "order_id": f"A-{i}",
            "total": 42.5,
            "customer": {"email": f"c{i}@example.com", "name": "Bob"},
            "items": [{"name": "Tea", "quantity": 2, "price": 21.25}],
        },
        "user.registered": {"email": f"u{i}@example.com", "name": f"U{i}"},
        "payment.failed": {
            "payment_id": f"pay_{i}",
            "amount": 19.99,
            "currency": "USD",
            "reason": "card expired",
            "attempt": 1,
            "customer": {"email": f"p{i}@example.com"},
        },
    }[kind]
    return {"specversion": "1.0", "id": f"{kind}-{i}", "type": kind, "source": "/t", "data": data}


def new_catalog(tmp_path: Path) -> Path:
    new = tmp_path / "new"
    shutil.copytree(EXAMPLE, new)
    rules = (new / "rules.yaml").read_text()
    (new / "rules.yaml").write_text(rules.replace("event.data.total > 0", "event.data.total > 100"))
    (new / "templates/welcome/email/subject.txt.j2").write_text("Hello, {{ name }}!\n")
    (new / "templates/ops/webhook").mkdir(parents=True)
    (new / "templates/ops/webhook/body.json.j2").write_text('{"payment": {{ id | tojson }}}')
    (new / "rules/ops.yaml").write_text(
        "rules:\n"
        "  - id: ops-payment-failed\n"
        "    version: 1\n"
        "    events: [payment.failed]\n"
        "    recipients: [{url: \"'https://ops.example.com/hook'\"}]\n"
        "    channels: [webhook]\n"
        "    template: ops\n"
        "    category: operations\n"
        "    variables: {id: event.data.payment_id}\n"
    )
    return new


def test_diff_over_past_events(
    settings: TidingsSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    unique: str,
) -> None:
    topic = make_topic("catdiff", 2)
    producer = Producer(settings.kafka.client_config())
    for i in range(5):
        for kind in ("order.created", "user.registered", "payment.failed"):
            producer.produce(topic, json.dumps(event(i, kind)).encode(), str(i).encode())
    producer.produce(topic, b"not json", b"x")
    assert producer.flush(30) == 0
    new = new_catalog(tmp_path)

    argv = ["catalog", "diff", str(EXAMPLE), str(new), "--from", f"{topic}@0", "--limit", "100"]
    assert main([*argv, "--no-progress", "--locale", "default"]) == 0
    out = capsys.readouterr().out
    summary = out.strip().splitlines()[-1]
    assert "16 record(s) read, 1 undecodable" in summary
    assert "5 added, 5 removed, 5 changed, 0 error(s), 5 unchanged" in summary
    assert (
        "ADDED event payment.failed-0 (payment.failed): https://ops.example.com/hook via webhook"
        in out
    )
    assert "REMOVED event order.created-3 (order.created): c3@example.com via email" in out
    changed = out[out.index("CHANGED event user.registered-2") :]
    assert "subject: Welcome, U2!" in changed and "| subject: Hello, U2!" in changed

    # The limit bounds the read; nothing was committed under any group.
    assert main([*argv[:-1], "4", "--no-progress"]) == 0
    assert "# 4 record(s) read" in capsys.readouterr().out
    probe = Consumer({**settings.kafka.client_config(), "group.id": f"probe-{unique}"})
    committed = probe.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    probe.close()
    assert all(tp.offset < 0 for tp in committed)


def test_diff_from_a_timestamp_in_the_future_reads_nothing(
    settings: TidingsSettings, make_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = make_topic("catdiff", 1)
    producer = Producer(settings.kafka.client_config())
    producer.produce(topic, json.dumps(event(1, "order.created")).encode())
    assert producer.flush(30) == 0
    argv = ["catalog", "diff", str(EXAMPLE), str(EXAMPLE), "--from", f"{topic}@2999-01-01T00:00Z"]
    assert main([*argv, "--no-progress"]) == 0
    assert "# 0 record(s) read" in capsys.readouterr().out
    assert main(["catalog", "diff", str(EXAMPLE), str(EXAMPLE), "--from", "nope"]) == 2
