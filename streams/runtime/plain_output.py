"""Outputs and commits of the stages that write outside Kafka (audit, recipients).

Those stages write Postgres, then produce what they must (dead letters) with a plain
idempotent producer, then commit their consumer's offsets: no Kafka transaction, because
their real output is a Postgres write that a redo repeats idempotently. Both loops ride
out a broker outage through the stage's `Outage` and give up only when asked to stop.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.exceptions import ConsumerFenced, StageStopping
from streams.runtime.kafka import consumer_fatal
from streams.runtime.outage import Outage
from streams.runtime.records import Out

__all__ = ["TRANSIENT_COMMIT_ERRORS", "commit_sync", "produce_all"]

log = logging.getLogger(__name__)

# A commit failing with one of these is retried (the broker or coordinator is away).
TRANSIENT_COMMIT_ERRORS = {
    KafkaError._WAIT_COORD, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
}  # fmt: skip


def produce_all(producer: Producer, outs: list[Out], kafka: Outage, stop: threading.Event) -> None:
    """Produce `outs` and wait until the broker has every one; blocks, rides out an outage.

    Raises StageStopping when `stop` is set while the broker is away.
    """
    todo = list(outs)
    while todo:
        failed: list[Out] = []

        def report(err: Any, _msg: Any, o: Out, failed: list[Out] = failed) -> None:
            if err is not None:
                failed.append(o)

        for o in todo:
            producer.produce(
                o.topic, value=o.value, key=o.key, headers=cast(Any, o.headers),
                on_delivery=functools.partial(report, o=o),
            )  # fmt: skip
        while producer.flush(1.0):
            kafka.failed(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
            if stop.is_set():
                raise StageStopping("the dead-letter topic is unreachable")
        if failed:  # timed out in the client: produce those again
            kafka.failed(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)))
        else:
            kafka.ok()
        todo = failed


def commit_sync(
    consumer: Consumer,
    offsets: dict[tuple[str, int], int],
    kafka: Outage,
    stop: threading.Event,
    stage: str,
) -> None:
    """Commit `offsets`; blocks, retrying while the coordinator is away.

    A commit refused for good (a rebalance took the partitions) is logged and dropped: the
    writes are done, and whoever reads these records next redoes them idempotently.
    Raises ConsumerFenced when the consumer is unusable, StageStopping when asked to stop.
    """
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    while True:
        try:
            consumer.commit(offsets=tps, asynchronous=False)
            kafka.ok()
            return
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if consumer_fatal(err):
                raise ConsumerFenced(f"{stage}: commit failed: {err.str()}") from exc
            if err.code() not in TRANSIENT_COMMIT_ERRORS and not err.retriable():
                log.info("%s: offsets not committed (%s); redone idempotently", stage, err.str())
                return
            wait = kafka.failed(exc)
            if stop.wait(wait):
                raise StageStopping(str(exc)) from exc
