"""TransactionalOutput against the real broker: commit, abortable error, fenced producer.

Outputs are never visible without their input offsets, and after any failure the stage
can go on with the same object (the producer is rebuilt when it was fenced).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import TidingsSettings
from streams.exceptions import TransactionAborted
from streams.runtime.dead_letter import header_map
from streams.runtime.kafka import make_consumer, make_producer
from streams.runtime.metrics import Metrics
from streams.runtime.outage import Outage
from streams.runtime.records import Out, norm_headers
from streams.runtime.transactions import TransactionalOutput
from tests.integration.pipeline import read_committed

pytestmark = pytest.mark.integration


def _setup(
    settings: TidingsSettings, make_topic: Callable[..., str], dlq: str | None = None
) -> tuple[str, str, Consumer, TransactionalOutput, str, Metrics]:
    src, out = make_topic("txn-in", 1), make_topic("txn-out", 1)
    group = f"txn-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(settings, group)
    consumer.assign([TopicPartition(src, 0, 0)])
    tid = f"tidings-test-{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    txn = TransactionalOutput(
        lambda: make_producer(settings, tid), consumer,
        Outage("test", "kafka", limit_s=None, metrics=metrics), threading.Event(),
        timeout_s=10, metrics_incr=metrics.incr, dlq_topic=dlq,
    )  # fmt: skip
    txn.init()
    return src, out, consumer, txn, tid, metrics


def _committed(consumer: Consumer, topic: str) -> int:
    return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)


def test_outputs_and_offsets_commit_together(
    settings: TidingsSettings, make_topic: Callable[..., str]
) -> None:
    src, out, consumer, txn, _, metrics = _setup(settings, make_topic)
    txn.commit([Out(out, b"one", b"k")], {(src, 0): 5})
    assert [m.value() for m in read_committed(settings, out, idle_s=1.5)] == [b"one"]
    assert _committed(consumer, src) == 5
    assert metrics.snapshot()["txn_commits"] == 1
    txn.close()
    consumer.close()


def test_an_abortable_error_aborts_everything_and_the_next_commit_works(
    settings: TidingsSettings, make_topic: Callable[..., str], kafka_admin: AdminClient
) -> None:
    src, out, consumer, txn, _, metrics = _setup(settings, make_topic)
    # The broker refuses records over 200 bytes on this topic: the produce fails inside the
    # transaction, which librdkafka then reports as needing an abort.
    tiny = f"test.txn-tiny.{uuid.uuid4().hex[:8]}"
    fut = kafka_admin.create_topics(
        [NewTopic(tiny, 1, 1, config={"max.message.bytes": "200"})], operation_timeout=30
    )
    fut[tiny].result(timeout=30)
    try:
        with pytest.raises(TransactionAborted):
            txn.commit([Out(out, b"lost", b"k"), Out(tiny, os.urandom(5000), b"k")], {(src, 0): 7})
        assert read_committed(settings, out, idle_s=1.5) == [], "nothing of it is visible"
        assert _committed(consumer, src) < 0, "and its offsets were not committed"
        txn.commit([Out(out, b"after", b"k")], {(src, 0): 7})
        assert [m.value() for m in read_committed(settings, out, idle_s=1.5)] == [b"after"]
        assert _committed(consumer, src) == 7
        assert metrics.snapshot()["txn_aborts"] == 1
    finally:
        txn.close()
        consumer.close()
        kafka_admin.delete_topics([tiny], operation_timeout=30)[tiny].result(timeout=30)


def test_an_output_refused_for_good_is_dead_lettered_and_the_batch_commits(
    settings: TidingsSettings, make_topic: Callable[..., str], kafka_admin: AdminClient
) -> None:
    dlq = make_topic("txn-dlq", 1)
    src, out, consumer, txn, _, metrics = _setup(settings, make_topic, dlq)
    tiny = f"test.txn-tiny.{uuid.uuid4().hex[:8]}"
    fut = kafka_admin.create_topics(
        [NewTopic(tiny, 1, 1, config={"max.message.bytes": "200"})], operation_timeout=30
    )
    fut[tiny].result(timeout=30)
    big = os.urandom(5000)
    try:
        # Without the DLQ this batch would abort on every redo (the test above).
        txn.commit([Out(out, b"kept", b"k"), Out(tiny, big, b"big", [("h", b"v")])], {(src, 0): 3})
        assert [m.value() for m in read_committed(settings, out, idle_s=1.5)] == [b"kept"]
        assert _committed(consumer, src) == 3
        [dead] = read_committed(settings, dlq, idle_s=1.5)
        assert dead.value() == big and dead.key() == b"big"
        meta = header_map(norm_headers(dead.headers()))
        assert meta["tidings-dlq-reason"] == "output_refused"
        assert meta["kafka_dlt-original-topic"] == tiny
        assert meta["kafka_dlt-original-partition"] == "-1"
        assert "size" in meta["kafka_dlt-exception-message"].lower()
        assert ("h", b"v") in norm_headers(dead.headers())
        assert metrics.snapshot()["txn_aborts"] == 1
        assert metrics.snapshot()["txn_commits"] == 1
    finally:
        txn.close()
        consumer.close()
        kafka_admin.delete_topics([tiny], operation_timeout=30)[tiny].result(timeout=30)


def test_a_fenced_producer_is_rebuilt_and_the_batch_redone(
    settings: TidingsSettings, make_topic: Callable[..., str]
) -> None:
    src, out, consumer, txn, tid, _ = _setup(settings, make_topic)
    txn.commit([Out(out, b"first", b"k")], {(src, 0): 1})
    # A second producer with the same transactional.id (a zombie's successor) fences ours.
    other = Producer({**settings.kafka.client_config(), "transactional.id": tid})
    other.init_transactions(30)
    with pytest.raises(TransactionAborted, match="rebuilt"):
        txn.commit([Out(out, b"fenced", b"k")], {(src, 0): 2})
    # Rebuilt with the same id, ours fences the other in turn and goes on.
    txn.commit([Out(out, b"redone", b"k")], {(src, 0): 2})
    values = [m.value() for m in read_committed(settings, out, idle_s=1.5)]
    assert values == [b"first", b"redone"]
    assert _committed(consumer, src) == 2
    txn.close()
    consumer.close()
