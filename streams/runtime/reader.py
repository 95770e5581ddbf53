"""Read a topic to its end as of now: the one reader behind the catalog load, `tidings dlq`
and `tidings catalog diff`.

It never touches a consumer group that matters: a fresh random group id, `assign()` of
every partition (no join, no rebalance), no commits. It reads with
isolation.level=read_committed, so records of aborted transactions are never seen, and
it stops at each partition's high watermark as of `open()`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from schemas.envelope import Origin
from schemas.settings import TidingsSettings
from streams.exceptions import ReadStalled, TopicMissing
from streams.runtime.kafka import make_consumer
from streams.runtime.records import norm_headers

__all__ = ["TopicReader", "TopicRecord"]

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TopicRecord:
    """One committed record, its headers as (name, bytes) pairs."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # 0 when the record has none
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @property
    def origin(self) -> Origin:
        """Where it came from, as error messages name it."""
        return Origin(
            topic=self.topic, partition=self.partition, offset=self.offset,
            timestamp_ms=self.timestamp_ms or None,
        )  # fmt: skip


class TopicReader:
    """Iterate a topic's committed records, partition by partition in offset order.

    Use as a context manager. `open()` (or `with`) raises TopicMissing when the topic
    doesn't exist, ReadStalled when its offsets can't be read; then `total` says how many
    records are due. Iterating blocks while records are due and raises ReadStalled when
    nothing arrives for `idle_s` (or when `deadline_s` passes first).

    Start at the beginning (default), at `offset` on every partition (clamped to the
    partition's low watermark), or at the first record at or after `timestamp_ms`.
    `limit` bounds how many records are yielded; `partitions` reads only those.
    """

    def __init__(
        self,
        settings: TidingsSettings,
        topic: str,
        *,
        offset: int | None = None,
        timestamp_ms: int | None = None,
        limit: int | None = None,
        partitions: tuple[int, ...] | None = None,
        idle_s: float = _TIMEOUT_S,
        deadline_s: float | None = None,
        purpose: str = "reader",
    ) -> None:
        self._s = settings
        self.topic = topic
        self._offset = offset
        self._timestamp_ms = timestamp_ms
        self._limit = limit
        self._only = partitions
        self._idle_s = idle_s
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._purpose = purpose
        self._consumer: Any = None
        self._begin: dict[int, int] = {}
        self._ends: dict[int, int] = {}

    @property
    def total(self) -> int:
        """How many records the read will yield at most (after `open()`)."""
        due = sum(self._ends[p] - b for p, b in self._begin.items())
        return due if self._limit is None else min(due, self._limit)

    def open(self) -> TopicReader:
        """Find the partitions and their bounds; raises TopicMissing or ReadStalled."""
        self._consumer = c = make_consumer(
            self._s, f"tidings-{self._purpose}-{uuid.uuid4().hex}", None,
            **{"enable.auto.commit": False, "enable.partition.eof": True},
        )  # fmt: skip
        try:
            md = c.list_topics(self.topic, timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise ReadStalled(f"cannot read the metadata of {self.topic}: {_why(exc)}") from exc
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise TopicMissing(f"topic {self.topic} does not exist")
        for p in sorted(tmd.partitions):
            if self._only is not None and p not in self._only:
                continue
            try:
                low, high = c.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=_TIMEOUT_S
                )
            except KafkaException as exc:
                raise ReadStalled(f"cannot read offsets of {self.topic}/{p}: {_why(exc)}") from exc
            begin = self._start(p, low, high)
            if begin < high:
                self._begin[p], self._ends[p] = begin, high
        return self

    def close(self) -> None:
        """Close the consumer; never raises."""
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()
            self._consumer = None

    def __enter__(self) -> TopicReader:
        return self.open()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[TopicRecord]:
        if not self._begin:
            return
        c = self._consumer
        assert c is not None, "open() first"
        c.assign([TopicPartition(self.topic, p, b) for p, b in self._begin.items()])
        ends = dict(self._ends)
        left = self._limit
        last = time.monotonic()
        while ends and (left is None or left > 0):
            msgs: list[Message] = c.consume(500 if left is None else min(500, left), 0.5)
            now = time.monotonic()
            if msgs:
                last = now
            elif now - last > self._idle_s or (self._deadline is not None and now > self._deadline):
                parts = ", ".join(f"{self.topic}/{p}" for p in sorted(ends))
                raise ReadStalled(
                    f"no progress reading {parts} for {now - last:.0f} s; is Kafka up?"
                )
            for m in msgs:
                rec = self._record(m, ends)
                if rec is None:
                    continue
                yield rec
                if left is not None:
                    left -= 1
                    if left == 0:
                        return

    # ------------------------------------------------------------ internals

    def _start(self, p: int, low: int, high: int) -> int:
        if self._timestamp_ms is not None:
            [found] = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, p, self._timestamp_ms)], timeout=_TIMEOUT_S
            )
            return int(found.offset) if found.offset >= 0 else high
        return max(self._offset or 0, low)

    def _record(self, m: Message, ends: dict[int, int]) -> TopicRecord | None:
        err = m.error()
        p = m.partition() or 0
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                ends.pop(p, None)
                return None
            raise ReadStalled(f"reading {self.topic}/{p}: {err.str()}")
        end = ends.get(p)
        off = m.offset() or 0
        if end is None or off >= end:
            ends.pop(p, None)
            return None
        if off >= end - 1:
            ends.pop(p, None)
        ts = m.timestamp()[1]
        return TopicRecord(
            topic=self.topic, partition=p, offset=off, timestamp_ms=ts if ts > 0 else 0,
            key=m.key(), value=m.value(), headers=norm_headers(m.headers()),
        )  # fmt: skip


def _why(exc: KafkaException) -> str:
    return exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
