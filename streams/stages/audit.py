"""The audit stage: `notification.status` → Postgres, batched with COPY, idempotent.

Each batch is copied into a temporary table and merged with
`insert … on conflict do nothing`, so replaying the status topic adds no rows.
Offsets are committed only after the database transaction commits.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, Producer
from pydantic import ValidationError

from schemas import codes
from schemas.status import StatusEvent
from streams.exceptions import ConsumerFenced, DependencyDown, StageStopping
from streams.runtime.dead_letter import dead_letter, reason_for
from streams.runtime.kafka import make_consumer, make_producer, records
from streams.runtime.member import claim_identity
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.plain_output import commit_sync, produce_all
from streams.runtime.records import Out, norm_headers
from streams.runtime.stage import StageContext
from streams.state.db import audit_partition_ddl, check_login, month_start, wait_for_migrations

__all__ = ["AUDIT_COLUMNS", "AuditStage", "audit_record", "audit_row"]

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


def audit_record(value: bytes | None) -> tuple[Any, ...]:
    """The audit_log row of one status record's value; pure.

    Raises pydantic.ValidationError on a bad payload (a tombstone included); the stage
    dead-letters whatever this raises.
    """
    return audit_row(StatusEvent.decode(value or b""))


class AuditStage:
    """Consume status events and write them to the audit log in batches."""

    name = "audit"

    def __init__(self, ctx: StageContext) -> None:
        self._s = ctx.settings
        self._stop = ctx.stop
        self._metrics = metrics = ctx.metrics
        self._months: set[Any] = set()
        self._conn: psycopg.Connection[Any] | None = None
        self._kafka = Outage("audit", "kafka", limit_s=None, metrics=metrics)
        self._pg = Outage("audit", "postgres", limit_s=None, metrics=metrics)

    def run(self) -> None:
        """Consume until `stop` is set; blocks.

        Kafka and Postgres outages are ridden out: the batch in hand is kept and written,
        dead-lettered and committed once they are back. Raises FatalStageError only past
        `runtime.outage_limit_s` of Postgres, on a schema without the shipped migrations, or
        when Postgres refuses the login (a setting to fix, never retried).
        """
        s = self._s
        self._kafka = Outage("audit", "kafka", limit_s=None, metrics=self._metrics)
        self._pg = Outage("audit", "postgres", limit_s=s.runtime.outage_limit_s,
                          metrics=self._metrics)  # fmt: skip
        try:
            wait_for_migrations(s.postgres.conninfo(), "audit", self._stop, self._pg)
        except StageStopping:
            return
        member = claim_identity(s.groups.audit, s.runtime.local_dir, s.runtime.instance_id)
        consumer = make_consumer(s, s.groups.audit, member)
        dlq = make_producer(s)
        log.info("audit: joining group %s as %s", s.groups.audit, member.instance)
        consumer.subscribe([s.topics.status])
        try:
            while not self._stop.is_set():
                self._metrics.beat("audit")
                try:
                    msgs = consumer.consume(s.runtime.audit_batch_size, s.runtime.poll_timeout_s)
                    if msgs:
                        self._batch(consumer, dlq, msgs)
                except ConsumerFenced as exc:
                    # The batch is redone by the new consumer: writing it again adds nothing.
                    log.warning("audit: %s; building a new consumer", exc)
                    with contextlib.suppress(KafkaException):
                        consumer.close()
                    consumer = make_consumer(s, s.groups.audit, member)
                    consumer.subscribe([s.topics.status])
        except StageStopping:
            log.info("audit: stopping with a batch unfinished; it is redone (idempotently)")
        finally:
            self._close_conn()
            dlq.flush(5)
            consumer.close()
            member.release()

    def _batch(self, consumer: Consumer, dlq: Producer, msgs: list[Message]) -> None:
        rows: list[tuple[tuple[Any, ...], Message]] = []
        dead: list[Out] = []
        offsets: dict[tuple[str, int], int] = {}
        for m, topic, part, off in records(msgs, "audit"):
            offsets[(topic, part)] = off + 1
            try:
                rows.append((audit_record(m.value()), m))
            except MemoryError:
                raise
            except Exception as exc:
                # Not ours to fix here (a bad payload, or anything one record's shape
                # sets off): keep it, with its reason, in the DLQ, and go on.
                o = dead_letter(
                    self._s.topics.dlq, topic=topic, partition=part, offset=off,
                    timestamp_ms=m.timestamp()[1], key=m.key(), value=m.value(),
                    headers=norm_headers(m.headers()), error=exc, stage="audit",
                    reason=reason_for(exc, ValidationError, codes.INVALID_STATUS_EVENT),
                )  # fmt: skip
                dead.append(o)
                self._metrics.incr("dlq")
        if rows:
            refused = self._pg.retry(lambda: self._write_rows(rows), self._stop)
            dead += [self._refused(m, exc) for m, exc in refused]
        if dead:
            self._deliver(dlq, dead)  # dead letters are durable before their offsets commit
            OutputCounter("audit", self._s.topics).produced(dead)
        if offsets:
            self._commit(consumer, offsets)
        self._metrics.incr("audited", len(rows))

    # ------------------------------------------------------------ riding out outages

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._s.postgres.conninfo())
            except psycopg.OperationalError as exc:
                check_login(exc, "audit")  # wrong credentials: FatalStageError, not an outage
                raise DependencyDown("postgres", f"audit: Postgres unreachable: {exc}") from exc
        return self._conn

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _write_rows(
        self, rows: list[tuple[tuple[Any, ...], Message]]
    ) -> list[tuple[Message, BaseException]]:
        """Write a batch; returns the rows Postgres refused (with why). Raises DependencyDown."""
        conn = self._connection()
        try:
            self._write(conn, [r for r, _ in rows])
            return []
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._close_conn()
            raise DependencyDown("postgres", f"audit: writing to Postgres failed: {exc}") from exc
        except psycopg.Error:
            pass  # one row Postgres refuses (e.g. a NUL in a text): find it, keep the rest
        refused: list[tuple[Message, BaseException]] = []
        for r, m in rows:
            try:
                self._write(conn, [r])
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._close_conn()
                raise DependencyDown("postgres", f"audit: writing failed: {exc}") from exc
            except psycopg.Error as exc:
                refused.append((m, exc))
        return refused

    def _refused(self, m: Message, exc: BaseException) -> Out:
        return dead_letter(
            self._s.topics.dlq, topic=m.topic() or "", partition=m.partition() or 0,
            offset=m.offset() or 0, timestamp_ms=m.timestamp()[1], key=m.key(),
            value=m.value(), headers=norm_headers(m.headers()), error=exc, stage="audit",
            reason=codes.AUDIT_WRITE_REFUSED,
        )  # fmt: skip

    def _deliver(self, dlq: Producer, outs: list[Out]) -> None:
        """Produce `outs` and wait until the broker has every one; rides out an outage."""
        produce_all(dlq, outs, self._kafka, self._stop)

    def _commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        commit_sync(consumer, offsets, self._kafka, self._stop, "audit")

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
