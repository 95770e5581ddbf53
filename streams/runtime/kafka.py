"""Thin adapter over confluent-kafka: client configs, topic creation, transactional commits.

Everything that touches librdkafka's error model lives here, translated into
`streams.exceptions` with `raise … from`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka.admin import AdminClient

# Public as confluent_kafka.admin.*, but re-exported implicitly there (mypy --strict refuses
# that), so imported from where they are defined, like NewTopic from cimpl.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic, TopicPartition

from catalog import KNOWN_CHANNELS
from schemas.settings import TidingsSettings
from streams.exceptions import ConsumerFenced, FatalStageError
from streams.observe.consumer_stats import LagStats
from streams.observe.metric_defs import RECORDS_CONSUMED
from streams.runtime.dead_letter import DLQ_MAX_MESSAGE_BYTES
from streams.runtime.member import MemberIdentity
from streams.runtime.records import Out
from streams.runtime.transactions import TransactionalOutput

__all__ = [
    "StageConsumer",
    "TransactionalOutput",
    "consumer_fatal",
    "dlq_max_message_bytes",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "pipeline_topics",
    "produce",
    "raise_dlq_max_message_bytes",
    "records",
    "retry_topic",
    "route_topics",
]

log = logging.getLogger(__name__)


def make_consumer(
    settings: TidingsSettings, group: str, member: MemberIdentity | None = None, **extra: Any
) -> Consumer:
    """A consumer for a stage: manual commits, read_committed, cooperative rebalancing.

    With `member`, static group membership (KIP-345): a restarted member with the same
    identity gets its partitions back at once, without a rebalance.
    """
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        # The broker's minimum (group.min.session.timeout.ms): a killed member's partitions
        # move to the others (or its restarted self) 6 s after its last heartbeat.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 50,
    }
    if settings.observe.lag_interval_s > 0:
        conf["statistics.interval.ms"] = int(settings.observe.lag_interval_s * 1000)
        conf["stats_cb"] = LagStats(group).on_stats
    if member is not None and settings.runtime.static_membership:
        conf["group.instance.id"] = member.instance
    conf.update(extra)
    return StageConsumer(conf)


class StageConsumer(Consumer):
    """A Consumer whose `poll` and `consume` raise ConsumerFenced once it is fatally broken.

    librdkafka reports a fatal consumer error (a static member fenced by its own earlier
    session after a broker restart, say) once, as an error event among the messages; a
    stage that happened to be paused, or putting a batch back, would skip it and sit with
    a consumer that never fetches again. Here it can't be missed: that call and every
    later one raise, and the stage rebuilds its consumer from the committed offsets.
    """

    _fatal: str | None = None

    def _check(self, msgs: list[Message]) -> None:
        for m in msgs:
            err = m.error()
            if err is not None and consumer_fatal(err):
                self._fatal = err.str()
        if self._fatal is not None:
            raise ConsumerFenced(f"consumer unusable: {self._fatal}")

    def poll(self, timeout: float = -1) -> Message | None:
        """Consumer.poll; raises ConsumerFenced once the consumer is fatally broken."""
        self._check([])
        m = super().poll(timeout)
        self._check([] if m is None else [m])
        return m

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        """Consumer.consume; raises ConsumerFenced once the consumer is fatally broken."""
        self._check([])
        msgs = super().consume(num_messages, timeout)
        self._check(msgs)
        return msgs


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
        # Room for a dead letter of the largest record a broker accepts plus our headers;
        # the DLQ topic is created to take it (DLQ_MAX_MESSAGE_BYTES).
        "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
        # Outputs of a transaction whose broker stays away longer time out in the client;
        # the transaction then needs an abort, and the stage redoes the batch.
        conf["transaction.timeout.ms"] = 60000
    conf.update(extra)
    return Producer(conf)


def pipeline_topics(
    settings: TidingsSettings, channels: Iterable[str] = KNOWN_CHANNELS
) -> dict[str, int]:
    """Every topic the pipeline uses, with its partition count."""
    t = settings.topics
    topics = {name: t.partitions for name in route_topics(settings)}
    topics.update({t.dispatch(c): t.partitions for c in channels})
    topics.update(
        {retry_topic(settings, tier): t.partitions for tier in settings.runtime.retry_tiers_s}
    )
    topics[t.status] = t.status_partitions
    topics[t.recipients] = t.partitions
    topics[t.dlq] = 1
    return topics


def route_topics(settings: TidingsSettings) -> tuple[str, ...]:
    """The topics route consumes: the domain topics and the triggers' topic."""
    return (*settings.topics.events, settings.topics.notify)


def retry_topic(settings: TidingsSettings, tier_s: float) -> str:
    """The retry topic of a delay tier, e.g. `notification.retry.10s`."""
    return f"{settings.topics.retry_prefix}{tier_s:g}s"


def ensure_topics(
    settings: TidingsSettings, topics: dict[str, int], timeout_s: float = 30.0
) -> list[str]:
    """Create missing topics; returns the names created. Raises FatalStageError on other errors.

    The DLQ topic (when in `topics`) is created with max.message.bytes DLQ_MAX_MESSAGE_BYTES;
    one that exists already with less is raised to it (`raise_dlq_max_message_bytes`, which
    only warns when the broker refuses). The recipients topic is created compacted.
    """
    admin = AdminClient(settings.kafka.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    dlq = settings.topics.dlq
    configs = {
        dlq: {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
        settings.topics.recipients: {"cleanup.policy": "compact"},
    }
    new = [
        NewTopic(
            name, parts, settings.kafka.replication_factor,
            config=configs.get(name, {}),
        )
        for name, parts in topics.items()
        if name not in existing
    ]  # fmt: skip
    created = []
    futures = admin.create_topics(new, operation_timeout=timeout_s) if new else {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise FatalStageError(f"could not create topic {name}: {exc.args[0].str()}") from exc
    if dlq in topics and dlq not in created:  # made before (or by someone else): check it
        raise_dlq_max_message_bytes(admin, settings, timeout_s)
    if created:
        _wait_servable(admin, {name: topics[name] for name in created}, timeout_s)
    return created


def _wait_servable(admin: AdminClient, topics: dict[str, int], timeout_s: float) -> None:
    """Block until every partition of the just-created `topics` is served by its leader.

    CreateTopics returns once the controller recorded the topic; the leader broker creates
    the partition's log when it applies that record, which a loaded broker does seconds later.
    A produce in that window fails with NOT_LEADER_OR_FOLLOWER, and an idempotent producer's
    next in-flight request can land first: a broker without producer state takes any first
    sequence (KAFKA-15591), and librdkafka then acks the earlier batch implicitly although it
    was never written. ListOffsets is answered by the partition's leader only once its log
    exists. Raises FatalStageError when a partition is still not served after `timeout_s`.
    """
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # untyped in confluent-kafka
    waiting = {TopicPartition(t, p) for t, n in topics.items() for p in range(n)}
    deadline = time.monotonic() + timeout_s
    last = ""
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FatalStageError(
                f"{len(waiting)} partition(s) of the new topics are still not served after "
                f"{timeout_s:.0f} s (e.g. {sorted(waiting, key=str)[0]}: {last})"
            )
        # librdkafka looks the leaders up in its metadata cache, which still holds the
        # topics as missing: refresh it first.
        try:
            admin.list_topics(timeout=max(1.0, min(left, 5.0)))
        except KafkaException as exc:
            last = exc.args[0].str()
        futures = admin.list_offsets(
            {tp: latest for tp in waiting}, request_timeout=max(1.0, min(left, 5.0))
        )
        for tp, fut in futures.items():
            try:
                fut.result(timeout=max(1.0, min(left, 5.0)) + 1.0)
                waiting.discard(TopicPartition(tp.topic, tp.partition))
            except (KafkaException, FutureTimeout) as exc:
                err = exc.args[0] if exc.args else exc
                last = err.str() if isinstance(err, KafkaError) else repr(exc)
        if waiting:
            time.sleep(0.1)


def dlq_max_message_bytes(admin: AdminClient, topic: str, timeout_s: float) -> int:
    """The max.message.bytes the broker reports for `topic`; blocks up to `timeout_s`.

    Raises KafkaException (e.g. no DescribeConfigs permission, no such topic) or
    concurrent.futures.TimeoutError.
    """
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res], request_timeout=timeout_s)[res].result(timeout_s)
    return int(configs["max.message.bytes"].value)


def raise_dlq_max_message_bytes(
    admin: AdminClient, settings: TidingsSettings, timeout_s: float
) -> bool:
    """Raise the existing DLQ topic's max.message.bytes to DLQ_MAX_MESSAGE_BYTES if lower.

    A topic made before tidings set it (or by hand) keeps the broker's 1 MiB, and dead
    letters of the largest records would be refused. Returns whether it now takes
    DLQ_MAX_MESSAGE_BYTES. Logs one INFO line when it raised it, a WARNING with the command
    to run when the broker refuses (e.g. ACLs) or doesn't answer; never raises.
    """
    topic = settings.topics.dlq
    fix = (
        f"kafka-configs.sh --bootstrap-server {settings.kafka.bootstrap_servers} --alter "
        f"--entity-type topics --entity-name {topic} "
        f"--add-config max.message.bytes={DLQ_MAX_MESSAGE_BYTES}"
    )
    try:
        have = dlq_max_message_bytes(admin, topic, timeout_s)
        if have >= DLQ_MAX_MESSAGE_BYTES:
            return True
        entry = ConfigEntry(
            "max.message.bytes", str(DLQ_MAX_MESSAGE_BYTES),
            incremental_operation=AlterConfigOpType.SET,
        )  # fmt: skip
        res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
        admin.incremental_alter_configs([res], request_timeout=timeout_s)[res].result(timeout_s)
    except (KafkaException, FutureTimeout, ValueError) as exc:
        err = exc.args[0] if exc.args else exc
        why = err.str() if isinstance(err, KafkaError) else repr(exc)
        log.warning(
            "DLQ topic %s: could not check or raise max.message.bytes to %d (%s); dead letters "
            "of records over its limit will be refused. Fix: %s",
            topic, DLQ_MAX_MESSAGE_BYTES, why, fix,
        )  # fmt: skip
        return False
    log.info("DLQ topic %s: raised max.message.bytes from %d to %d", topic, have,
             DLQ_MAX_MESSAGE_BYTES)  # fmt: skip
    return True


def produce(producer: Producer, o: Out) -> None:
    """Enqueue one output record; when the local queue is full, serve delivery reports first."""
    while True:
        try:
            producer.produce(o.topic, value=o.value, key=o.key, headers=cast(Any, o.headers))
            return
        except BufferError:
            producer.poll(0.05)


_last_error: dict[str, tuple[str, float]] = {}
_last_error_lock = threading.Lock()
_REPEAT_S = 60.0


def _log_consume_error(stage: str, text: str) -> None:
    # One line per change of error (and a reminder a minute), not one per record: a broker
    # outage makes librdkafka report the same transport error many times a second.
    now = time.monotonic()
    with _last_error_lock:
        last = _last_error.get(stage)
        if last is not None and last[0] == text and now - last[1] < _REPEAT_S:
            return
        _last_error[stage] = (text, now)
    log.warning("%s: consume error %s (librdkafka retries by itself)", stage, text)


def consumer_fatal(err: KafkaError) -> bool:
    """Whether a consumer-side error leaves the consumer unusable (it must be rebuilt)."""
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


def records(msgs: list[Message], stage: str) -> Iterator[tuple[Message, str, int, int]]:
    """The usable records of a consumed batch as (message, topic, partition, offset).

    Error events are logged (once per change) and skipped (partition EOF silently):
    librdkafka reports transient broker errors this way and recovers on its own. A fatal
    consumer error raises ConsumerFenced: the stage rebuilds its consumer. Counts the
    records into `tidings_records_consumed_total` (once per batch and topic).
    """
    counts: dict[str, int] = {}
    try:
        for m in msgs:
            err = m.error()
            if err is not None:
                if consumer_fatal(err):
                    raise ConsumerFenced(f"{stage}: consumer unusable: {err.str()}")
                if err.code() != KafkaError._PARTITION_EOF:
                    _log_consume_error(stage, err.str())
                continue
            topic = m.topic() or ""
            counts[topic] = counts.get(topic, 0) + 1
            yield m, topic, m.partition() or 0, m.offset() or 0
    finally:
        for topic, n in counts.items():
            RECORDS_CONSUMED.labels(stage, topic).inc(n)
