"""Thin adapter over confluent-kafka: client configs, topic creation, transactional commits.

Everything that touches librdkafka's error model lives here, translated into
`streams.exceptions` with `raise … from`.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from catalog import KNOWN_CHANNELS
from schemas.settings import TidingsSettings
from streams.exceptions import FatalStageError, TransactionAborted
from streams.records import TP, Out

__all__ = [
    "TransactionalOutput",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "pipeline_topics",
    "produce",
    "records",
    "retry_topic",
]

log = logging.getLogger(__name__)


def make_consumer(settings: TidingsSettings, group: str, **extra: Any) -> Consumer:
    """A consumer for a stage: manual commits, read_committed, cooperative rebalancing."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 50,
    }
    conf.update(extra)
    return Consumer(conf)


def make_producer(
    settings: TidingsSettings, transactional_id: str | None = None, **extra: Any
) -> Producer:
    """An idempotent producer; transactional when `transactional_id` is given."""
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500000,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = 60000
    conf.update(extra)
    return Producer(conf)


def transactional_id(stage: str) -> str:
    """A transactional.id unique to this process (KIP-447 fences zombies by group generation)."""
    return f"tidings-{stage}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pipeline_topics(
    settings: TidingsSettings, channels: Iterable[str] = KNOWN_CHANNELS
) -> dict[str, int]:
    """Every topic the pipeline uses, with its partition count."""
    t = settings.topics
    topics = {name: t.partitions for name in t.events}
    topics.update({t.dispatch(c): t.partitions for c in channels})
    topics.update(
        {retry_topic(settings, tier): t.partitions for tier in settings.runtime.retry_tiers_s}
    )
    topics[t.status] = t.status_partitions
    topics[t.dlq] = 1
    return topics


def retry_topic(settings: TidingsSettings, tier_s: float) -> str:
    """The retry topic of a delay tier, e.g. `notification.retry.10s`."""
    return f"{settings.topics.retry_prefix}{tier_s:g}s"


def ensure_topics(
    settings: TidingsSettings, topics: dict[str, int], timeout_s: float = 30.0
) -> list[str]:
    """Create missing topics; returns the names created. Raises FatalStageError on other errors."""
    admin = AdminClient(settings.kafka.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(name, parts, settings.kafka.replication_factor)
        for name, parts in topics.items()
        if name not in existing
    ]
    if not new:
        return []
    created = []
    for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise FatalStageError(f"could not create topic {name}: {exc.args[0].str()}") from exc
    return created


class TransactionalOutput:
    """Produce records and commit consumer offsets in one Kafka transaction."""

    def __init__(self, producer: Producer, consumer: Consumer, timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._ready = False

    def init(self) -> None:
        """Register the transactional id with the coordinator; blocks, raises FatalStageError."""
        try:
            self._producer.init_transactions(self._timeout_s)
        except KafkaException as exc:
            raise FatalStageError(f"init_transactions failed: {exc.args[0].str()}") from exc
        self._ready = True

    def commit(self, outs: list[Out], offsets: dict[TP, int]) -> None:
        """Produce `outs` and commit `offsets` atomically; blocks until the broker confirms.

        Raises TransactionAborted (nothing is visible: redo the batch) or
        FatalStageError (this producer is fenced or broken: exit).
        """
        if not outs and not offsets:
            return
        p = self._producer
        try:
            p.begin_transaction()
            for o in outs:
                self._produce(o)
            if offsets:
                tps = [TopicPartition(t, part, off) for (t, part), off in offsets.items()]
                p.send_offsets_to_transaction(
                    tps, self._consumer.consumer_group_metadata(), self._timeout_s
                )
            p.commit_transaction(self._timeout_s)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.txn_requires_abort():
                self._abort()
                raise TransactionAborted(f"transaction aborted: {err.str()}") from exc
            if err.retriable():
                # The commit's outcome is unknown but retriable: retrying commit is safe.
                try:
                    p.commit_transaction(self._timeout_s)
                    return
                except KafkaException as exc2:
                    self._abort()
                    raise TransactionAborted(f"transaction aborted: {exc2.args[0].str()}") from exc2
            raise FatalStageError(f"transactional producer failed: {err.str()}") from exc

    def _produce(self, o: Out) -> None:
        produce(self._producer, o)

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(self._timeout_s)
        except KafkaException as exc:
            raise FatalStageError(f"abort_transaction failed: {exc.args[0].str()}") from exc


def produce(producer: Producer, o: Out) -> None:
    """Enqueue one output record; when the local queue is full, serve delivery reports first."""
    while True:
        try:
            producer.produce(o.topic, value=o.value, key=o.key, headers=cast(Any, o.headers))
            return
        except BufferError:
            producer.poll(0.05)


def records(msgs: list[Message], stage: str) -> Iterator[tuple[Message, str, int, int]]:
    """The usable records of a consumed batch as (message, topic, partition, offset).

    Error events are logged and skipped (partition EOF silently): librdkafka reports
    transient broker errors this way and recovers on its own.
    """
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("%s: consume error %s", stage, err.str())
            continue
        yield m, m.topic() or "", m.partition() or 0, m.offset() or 0
