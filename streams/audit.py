"""The audit stage: `notification.status` → Postgres, batched with COPY, idempotent.

Each batch is copied into a temporary table and merged with
`insert … on conflict do nothing`, so replaying the status topic adds no rows.
Offsets are committed only after the database transaction commits.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from schemas.settings import TidingsSettings
from schemas.status import StatusEvent
from streams.db import audit_partition_ddl, month_start, require_migrations
from streams.dlq import dead_letter
from streams.exceptions import FatalStageError
from streams.kafka import make_consumer, make_producer, produce, records
from streams.metrics import Metrics
from streams.records import norm_headers

__all__ = ["AUDIT_COLUMNS", "AuditStage", "audit_row"]

log = logging.getLogger(__name__)

AUDIT_COLUMNS = (
    "notification_id", "status", "attempt", "event_at", "status_at", "status_event_id",
    "source_event_id", "source_event_type", "tenant", "rule_id", "rule_version",
    "template_id", "template_version", "catalog_version", "channel", "recipient_id",
    "provider", "provider_message_id", "error_code", "error_message",
)  # fmt: skip


def audit_row(ev: StatusEvent) -> tuple[Any, ...]:
    """The audit_log row for one status event; pure."""
    d = ev.data
    event_at = (
        datetime.fromtimestamp(d.event_time_ms / 1000, tz=UTC) if d.event_time_ms else ev.time
    )
    return (
        d.notification_id, d.status, d.attempt, event_at, ev.time, ev.id,
        d.source_event_id, d.source_event_type, d.tenant, d.rule_id, d.rule_version,
        d.template_id, d.template_version, d.catalog_version, d.channel, d.recipient_id,
        d.provider, d.provider_message_id,
        d.error.code if d.error else None, d.error.message if d.error else None,
    )  # fmt: skip


class AuditStage:
    """Consume status events and write them to the audit log in batches."""

    name = "audit"

    def __init__(self, settings: TidingsSettings, stop: threading.Event, metrics: Metrics) -> None:
        self._s = settings
        self._stop = stop
        self._metrics = metrics
        self._months: set[Any] = set()

    def run(self) -> None:
        """Consume until `stop` is set; blocks. Raises FatalStageError when Postgres is gone."""
        s = self._s
        require_migrations(s.postgres.conninfo(), "audit")
        consumer = make_consumer(s, s.groups.audit)
        dlq = make_producer(s)
        consumer.subscribe([s.topics.status])
        try:
            with psycopg.connect(s.postgres.conninfo()) as conn:
                while not self._stop.is_set():
                    msgs = consumer.consume(s.runtime.audit_batch_size, s.runtime.poll_timeout_s)
                    if msgs:
                        self._batch(conn, consumer, dlq, msgs)
        except psycopg.OperationalError as exc:
            raise FatalStageError(f"audit: Postgres unavailable: {exc}") from exc
        finally:
            dlq.flush(10)
            consumer.close()

    def _batch(
        self,
        conn: psycopg.Connection[Any],
        consumer: Consumer,
        dlq: Any,
        msgs: list[Message],
    ) -> None:
        rows = []
        offsets: dict[tuple[str, int], int] = {}
        for m, topic, part, off in records(msgs, "audit"):
            offsets[(topic, part)] = off + 1
            try:
                rows.append(audit_row(StatusEvent.decode(m.value() or b"")))
            except ValidationError as exc:
                # Not ours to fix here: keep it, with its reason, in the DLQ.
                o = dead_letter(
                    self._s.topics.dlq, topic=topic, partition=part, offset=off,
                    timestamp_ms=m.timestamp()[1], key=m.key(), value=m.value(),
                    headers=norm_headers(m.headers()), error=exc, stage="audit",
                    reason="invalid-status-event",
                )  # fmt: skip
                produce(dlq, o)
                self._metrics.incr("dlq")
        if rows:
            self._write(conn, rows)
        if offsets:
            dlq.flush(30)  # dead letters are durable before their offsets are committed
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        self._metrics.incr("audited", len(rows))

    def _write(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        months = {month_start(r[3]) for r in rows} - self._months
        cols = ", ".join(AUDIT_COLUMNS)
        with conn.transaction():
            for month in sorted(months):
                conn.execute(audit_partition_ddl(month).encode())
            conn.execute(
                "create temp table if not exists audit_batch "
                "(like audit_log including defaults) on commit delete rows"
            )
            with conn.cursor().copy(f"copy audit_batch ({cols}) from stdin".encode()) as cp:
                for r in rows:
                    cp.write_row(r)
            conn.execute(
                f"insert into audit_log ({cols}) select {cols} from audit_batch "
                "on conflict do nothing".encode()
            )
        self._months |= months
