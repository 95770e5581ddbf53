"""The recipients stage: the recipients topic → the Postgres directory, in offset order.

Each consumed batch is decoded (`decode_change`), written in ONE transaction
(`Directory.apply`: idempotent, an older record never overwrites a newer one), and only then
are its offsets committed: a crash anywhere redoes the batch, which changes nothing already
applied. A record that doesn't decode (bad JSON, a failed validation or bound, an unknown
type, a key that isn't `<tenant>/<id>` of its data, preferences naming a category or rule
the catalog doesn't have) goes to the dead-letter topic with
reason `invalid_recipient`, and the stage goes on. A Kafka tombstone (null value) is a
delete of its key's recipient, as compaction expects. A `tidings.tenant.defaults` record
(keyed `<tenant>/`) replaces a tenant's default preferences and required categories.
"""

from __future__ import annotations

import contextlib
import logging

from confluent_kafka import Consumer, KafkaException, Message, Producer

from schemas import codes
from streams.exceptions import ConsumerFenced, StageStopping
from streams.runtime.dead_letter import dead_letter, reason_for
from streams.runtime.kafka import make_consumer, make_producer, records
from streams.runtime.member import claim_identity
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.plain_output import commit_sync, produce_all
from streams.runtime.records import Out, norm_headers
from streams.runtime.stage import StageContext
from streams.state.db import wait_for_migrations
from streams.state.directory import Directory, DirectoryRefused
from streams.state.directory_rows import Change
from streams.state.recipient_rows import decode_change

__all__ = ["RecipientsStage", "decode_change"]

log = logging.getLogger(__name__)


class RecipientsStage:
    """Consume the recipients topic and materialise it into the directory, in batches."""

    name = "recipients"

    def __init__(self, ctx: StageContext) -> None:
        self._s = ctx.settings
        self._stop = ctx.stop
        self._metrics = metrics = ctx.metrics
        self._dir = Directory(self._s.postgres.conninfo(), name="recipients")
        self._catalog = ctx.catalog  # preferences may name only its categories and rules
        self._kafka = Outage("recipients", "kafka", limit_s=None, metrics=metrics)
        self._pg = Outage("recipients", "postgres", limit_s=None, metrics=metrics)

    def run(self) -> None:
        """Consume until `stop` is set; blocks.

        Kafka and Postgres outages are ridden out: the batch in hand is kept, written and
        committed once they are back. Raises FatalStageError only past
        `runtime.outage_limit_s` of Postgres, on a schema without the shipped migrations,
        or when Postgres refuses the login (a setting to fix, never retried).
        """
        s = self._s
        self._pg = Outage("recipients", "postgres", limit_s=s.runtime.outage_limit_s,
                          metrics=self._metrics)  # fmt: skip
        try:
            wait_for_migrations(s.postgres.conninfo(), "recipients", self._stop, self._pg)
        except StageStopping:
            return
        group = s.groups.recipients
        member = claim_identity(group, s.runtime.local_dir, s.runtime.instance_id)
        consumer = make_consumer(s, group, member)
        dlq = make_producer(s)
        log.info("recipients: joining group %s as %s", group, member.instance)
        consumer.subscribe([s.topics.recipients])
        try:
            while not self._stop.is_set():
                self._metrics.beat("recipients")
                try:
                    msgs = consumer.consume(s.runtime.batch_size, s.runtime.poll_timeout_s)
                    if msgs:
                        self._batch(consumer, dlq, msgs)
                except ConsumerFenced as exc:
                    # The batch is redone by the new consumer: applying it again changes nothing.
                    log.warning("recipients: %s; building a new consumer", exc)
                    with contextlib.suppress(KafkaException):
                        consumer.close()
                    consumer = make_consumer(s, group, member)
                    consumer.subscribe([s.topics.recipients])
        except StageStopping:
            log.info("recipients: stopping with a batch unfinished; it is redone (idempotently)")
        finally:
            self._dir.close()
            dlq.flush(5)
            consumer.close()
            member.release()

    def _batch(self, consumer: Consumer, dlq: Producer, msgs: list[Message]) -> None:
        good: list[tuple[Change, Message]] = []
        dead: list[Out] = []
        offsets: dict[tuple[str, int], int] = {}
        catalog = self._catalog.current if self._catalog is not None else None
        for m, topic, part, off in records(msgs, "recipients"):
            offsets[(topic, part)] = off + 1
            try:
                change = decode_change(m.key(), m.value(), catalog)
                good.append(((part, off, change, m.key() or b""), m))
            except MemoryError:
                raise
            except Exception as exc:
                # A producer's mistake, not ours to fix: keep it, with its reason, and go on.
                dead.append(self._dead(m, exc, reason_for(exc, ValueError,
                                                          codes.INVALID_RECIPIENT)))  # fmt: skip
        if good:
            refused = self._pg.retry(lambda: self._write(good), self._stop)
            dead += [self._dead(m, exc, codes.INVALID_RECIPIENT) for m, exc in refused]
        if dead:
            self._deliver(dlq, dead)  # dead letters are durable before their offsets commit
            OutputCounter("recipients", self._s.topics).produced(dead)
            self._metrics.incr("dlq", len(dead))
        if offsets:
            self._commit(consumer, offsets)
        self._metrics.incr("recipients", len(good))

    def _write(self, good: list[tuple[Change, Message]]) -> list[tuple[Message, BaseException]]:
        """Apply a batch; returns the records Postgres refused (with why). Raises DependencyDown.

        Postgres refusing the batch (one record's NUL in a text, say) rolls all of it back;
        the records are then applied one by one, in order, to find the refused ones.
        """
        try:
            self._dir.apply([c for c, _ in good])
            return []
        except DirectoryRefused:
            pass
        refused: list[tuple[Message, BaseException]] = []
        for c, m in good:
            try:
                self._dir.apply([c])
            except DirectoryRefused as exc:
                refused.append((m, exc))
        return refused

    def _dead(self, m: Message, exc: BaseException, reason: str) -> Out:
        return dead_letter(
            self._s.topics.dlq, topic=m.topic() or "", partition=m.partition() or 0,
            offset=m.offset() or 0, timestamp_ms=m.timestamp()[1], key=m.key(),
            value=m.value(), headers=norm_headers(m.headers()), error=exc, stage="recipients",
            reason=reason,
        )  # fmt: skip

    def _deliver(self, dlq: Producer, outs: list[Out]) -> None:
        """Produce `outs` and wait until the broker has every one; rides out an outage."""
        produce_all(dlq, outs, self._kafka, self._stop)

    def _commit(self, consumer: Consumer, offsets: dict[tuple[str, int], int]) -> None:
        commit_sync(consumer, offsets, self._kafka, self._stop, "recipients")
