"""The route stage without Kafka: `route_record` directly, and one loop step against a
fake consumer and a fake transaction (a `Message` protocol, as quix-streams tests do)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from confluent_kafka import Consumer, TopicPartition

from catalog import load_catalog
from schemas.settings import TidingsSettings
from streams.exceptions import TransactionAborted
from streams.runtime.dead_letter import header_map
from streams.runtime.metrics import Metrics
from streams.runtime.records import TP, Out
from streams.runtime.stage import StageContext
from streams.runtime.transactions import TransactionalOutput
from streams.stages.route import RouteStage, route_record
from streams.state.catalog import CatalogRef

EXAMPLES = Path(__file__).resolve().parents[4] / "examples/catalog"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Message(Protocol):
    """What the stage reads of a confluent_kafka.Message."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_796_000_000_000)

    def error(self) -> None:
        return None


class FakeConsumer:
    """Hands out `batch` (first by poll, the rest by consume) and records seeks."""

    def __init__(self, batch: list[Message]) -> None:
        self._batch = list(batch)
        self.seeks: list[tuple[str, int, int]] = []

    def poll(self, timeout: float = -1) -> Message | None:
        return self._batch.pop(0) if self._batch else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        out, self._batch = self._batch[:num_messages], self._batch[num_messages:]
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("order.created", 0)]

    def committed(self, parts: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, -1001) for p in parts]

    def seek(self, p: TopicPartition) -> None:
        self.seeks.append((p.topic, p.partition, p.offset))


class FakeTxn:
    def __init__(self, fail: bool = False) -> None:
        self.commits: list[tuple[list[Out], dict[TP, int]]] = []
        self._fail = fail

    def commit(self, outs: list[Out], offsets: dict[TP, int], group_metadata: Any = None) -> None:
        if self._fail:
            raise TransactionAborted("broker said no")
        self.commits.append((outs, offsets))


def _event() -> bytes:
    return (EXAMPLES / "events/order.created.json").read_bytes()


def _route(settings: TidingsSettings, value: bytes | None) -> tuple[list[Out], str]:
    return route_record(
        topic="order.created", partition=0, offset=7, timestamp_ms=1, key=None, value=value,
        headers=[], catalog=load_catalog(EXAMPLES), settings=settings, now=NOW,
    )  # fmt: skip


def test_a_matching_event_becomes_dispatch_records_and_queued_statuses(
    settings: TidingsSettings,
) -> None:
    outs, outcome = _route(settings, _event())
    assert outcome == "routed"
    dispatch = [o for o in outs if o.topic.startswith(settings.topics.dispatch_prefix)]
    status = [o for o in outs if o.topic == settings.topics.status]
    assert dispatch and len(dispatch) == len(status), "one queued status per notification"
    assert {json.loads(o.value or b"{}")["data"]["status"] for o in status} == {"queued"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b'{"not json', "invalid_event"), (None, "invalid_event"), (b"[]", "invalid_event")],
)
def test_bad_input_is_dead_lettered_byte_for_byte_with_its_reason(
    settings: TidingsSettings, value: bytes | None, reason: str
) -> None:
    [out], outcome = _route(settings, value)
    assert outcome == "dlq" and out.topic == settings.topics.dlq and out.value == value
    meta = header_map(out.headers)
    assert meta["tidings-dlq-reason"] == reason
    assert meta["kafka_dlt-original-offset"] == "7"


def _stage(settings: TidingsSettings) -> RouteStage:
    ctx = StageContext(settings, threading.Event(), Metrics(), catalog=CatalogRef.load(EXAMPLES))
    return RouteStage(ctx)


def test_one_step_commits_the_batchs_outputs_with_the_next_offsets(
    settings: TidingsSettings,
) -> None:
    batch: list[Message] = [FakeMessage("order.created", 0, o, _event()) for o in (3, 4)]
    batch.append(FakeMessage("order.created", 0, 5, b"garbage"))
    consumer, txn = FakeConsumer(batch), FakeTxn()
    stage = _stage(settings)
    stage._step(cast(Consumer, consumer), cast(TransactionalOutput, txn), False)
    [(outs, offsets)] = txn.commits
    assert offsets == {("order.created", 0): 6}, "committed past the last record, in one go"
    assert sum(o.topic == settings.topics.dlq for o in outs) == 1
    assert consumer.seeks == []


def test_an_aborted_commit_rewinds_to_the_batchs_first_offset(settings: TidingsSettings) -> None:
    batch: list[Message] = [FakeMessage("order.created", 0, o, _event()) for o in (3, 4)]
    consumer = FakeConsumer(batch)
    stage = _stage(settings)
    stage._step(cast(Consumer, consumer), cast(TransactionalOutput, FakeTxn(fail=True)), False)
    assert consumer.seeks == [("order.created", 0, 3)], "redone from its first record"


class TimedConsumer(FakeConsumer):
    """A FakeConsumer that records the timeout of every consume() call."""

    def __init__(self, batch: list[Message]) -> None:
        super().__init__(batch)
        self.timeouts: list[float] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self.timeouts.append(timeout)
        return super().consume(num_messages, timeout)


def test_a_batch_right_after_a_commit_fills_for_the_commit_interval(
    settings: TidingsSettings,
) -> None:
    # One transaction per interval under load, not one per fetch (the broker's cost).
    s = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"route_commit_interval_s": 0.3})}
    )
    stage, txn = _stage(s), FakeTxn()
    first = TimedConsumer([FakeMessage("order.created", 0, 3, _event())])
    stage._step(cast(Consumer, first), cast(TransactionalOutput, txn), False)
    assert first.timeouts == [0], "no commit yet: the first batch takes what is fetched"
    second = TimedConsumer([FakeMessage("order.created", 0, 4, _event())])
    stage._step(cast(Consumer, second), cast(TransactionalOutput, txn), False)
    assert len(txn.commits) == 2
    assert second.timeouts[0] == 0 and 0.2 < second.timeouts[1] <= 0.3, second.timeouts
