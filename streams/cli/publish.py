"""Producing change records to the recipients topic from a command, and hearing Kafka's acks.

`ChangePublisher(settings)` ensures the topic, then `send(key, change)` produces one record
(waiting out a full local queue, never dropping), and `finish()` flushes and says what Kafka
did not acknowledge. Shared by `tidings recipients publish` and `tidings tenants defaults
--publish`. Raises FatalStageError (the topic can't be made) and KafkaException.
"""

from __future__ import annotations

from typing import Any

from schemas.recipient import RecipientChange
from schemas.settings import TidingsSettings
from streams.runtime.kafka import ensure_topics, make_producer

__all__ = ["ChangePublisher"]

_HEADERS: list[tuple[str, str | bytes | None]] = [("content-type", b"application/cloudevents+json")]


class ChangePublisher:
    """One producer on `settings.topics.recipients`; `sent` counts the records produced."""

    def __init__(self, settings: TidingsSettings) -> None:
        self.topic = settings.topics.recipients
        ensure_topics(settings, {self.topic: settings.topics.partitions})
        self._producer = make_producer(settings)
        self._failed: list[str] = []
        self.sent = 0

    def _report(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed.append(err.str())

    def send(self, key: bytes, change: RecipientChange) -> None:
        """Produce `change` keyed `key`; blocks only while the local queue is full."""
        value = change.model_dump_json(exclude_none=True).encode()
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key,
                                       on_delivery=self._report, headers=_HEADERS)  # fmt: skip
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        self._producer.poll(0)

    def finish(self, timeout_s: float = 60.0) -> str | None:
        """Flush (bounded); None when Kafka acknowledged every record, else what went wrong."""
        left = self._producer.flush(timeout_s)
        if not left and not self._failed:
            return None
        why = self._failed[0] if self._failed else "timed out"
        return (
            f"{left + len(self._failed)} of {self.sent} record(s) not acknowledged by Kafka ({why})"
        )
