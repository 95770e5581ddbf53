"""Read past events from Kafka for `tidings catalog diff`: assign(), never commit, never send."""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from catalog.diff import DiffSummary
from schemas.envelope import Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.settings import TidingsSettings

__all__ = ["Progress", "Start", "parse_from", "replay"]


@dataclass(frozen=True, slots=True)
class Start:
    """Where a replay starts: an offset or a timestamp (ms), applied to every partition."""

    topic: str
    offset: int | None = None
    timestamp_ms: int | None = None


def parse_from(text: str) -> Start:
    """`TOPIC@OFFSET` or `TOPIC@ISO-8601`; raises ValueError saying what is accepted."""
    topic, sep, where = text.rpartition("@")
    if not sep or not topic or not where:
        raise ValueError(
            "write TOPIC@OFFSET (e.g. orders@0) or TOPIC@TIMESTAMP (orders@2026-01-05T00:00Z)"
        )
    if where.isdigit():
        return Start(topic, offset=int(where))
    try:
        moment = dt.datetime.fromisoformat(where)
    except ValueError:
        raise ValueError(
            f"{where!r} is neither an offset nor an ISO-8601 timestamp (2026-01-05T08:00:00Z)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return Start(topic, timestamp_ms=int(moment.timestamp() * 1000))


class Progress:
    """A one-line progress bar on a terminal (silent when `out` is not one, or disabled)."""

    def __init__(self, total: int, out: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.done = max(total, 1), 0
        self.out = out or sys.stderr
        self.enabled = enabled and self.out.isatty()
        self._last = 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            filled = int(30 * min(self.done, self.total) / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            self.out.write(f"\r[{bar}] {self.done}/{self.total} events")
            self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


def _consumer(settings: TidingsSettings) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"tidings-diff-{uuid.uuid4().hex}",  # assign() only: never joins
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )


def replay(
    settings: TidingsSettings,
    start: Start,
    limit: int,
    summary: DiffSummary,
    progress: bool = True,
) -> Iterator[tuple[dict[str, Any], dt.datetime]]:
    """Yield (event, record time) from `start` until `limit` events or the end as of now.

    Raises ValueError if the topic does not exist. Undecodable records are counted in
    `summary.undecodable` and skipped.
    """
    from confluent_kafka import KafkaError, TopicPartition

    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(start.topic, timeout=10).topics.get(start.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ValueError(f"topic {start.topic!r} does not exist; check the name")
        parts = sorted(meta.partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(start.topic, p), 10) for p in parts
        }
        if start.timestamp_ms is not None:
            asked = [TopicPartition(start.topic, p, start.timestamp_ms) for p in parts]
            found = consumer.offsets_for_times(asked, timeout=10)
            begin = {
                tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition][1])
                for tp in found
            }
        else:
            begin = {p: max(start.offset or 0, ends[p][0]) for p in parts}
        todo = {p for p in parts if begin[p] < ends[p][1]}
        total = min(limit, sum(ends[p][1] - begin[p] for p in todo))
        bar = Progress(total, enabled=progress)
        consumer.assign([TopicPartition(start.topic, p, begin[p]) for p in todo])
        read = 0
        while todo and read < limit:
            for msg in consumer.consume(min(500, limit - read), 1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(msg.partition())
                    continue
                part, off = msg.partition(), msg.offset()
                if off + 1 >= ends[part][1]:
                    todo.discard(part)
                if off >= ends[part][1] or read >= limit:
                    continue
                read += 1
                bar.step()
                ts = msg.timestamp()[1]
                origin = Origin(topic=start.topic, partition=part, offset=off, timestamp_ms=ts)
                try:
                    env = decode_event(msg.value(), _headers(msg.headers()), origin)
                except InvalidEventError:
                    summary.undecodable += 1
                    continue
                moment = (
                    dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
                    if ts and ts > 0
                    else dt.datetime.now(dt.UTC)
                )
                yield env.as_cel(), moment
        bar.close()
    finally:
        consumer.close()


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
