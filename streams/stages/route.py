"""The route stage: domain events → one Notification per (recipient, channel) + `queued` status.

`route_record` is the pure decision for one record; `RouteStage` is the loop:
batch `consume()`, route each record, then produce every output and commit the
batch's offsets in one Kafka transaction (read-process-write exactly once).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from catalog import Catalog, CatalogError
from schemas import codes
from schemas.envelope import Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.notification import Notification, notification_id
from schemas.settings import TidingsSettings
from schemas.status import build_status
from streams.exceptions import ConsumerFenced, StreamsError, TransactionAborted
from streams.observe.metric_defs import EVENTS_ROUTED, IN_FLIGHT, PAUSED_PARTITIONS
from streams.observe.tracing import carried, context_of, span_headers
from streams.runtime.dead_letter import INTERNAL_ERROR, dead_letter
from streams.runtime.kafka import (
    TransactionalOutput,
    make_consumer,
    make_producer,
    records,
)
from streams.runtime.member import MemberIdentity, claim_identity
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import TP, Out, norm_headers
from streams.runtime.stage import StageContext, poll_batch

__all__ = ["RouteStage", "UnknownEventType", "route_record"]

log = logging.getLogger(__name__)


class UnknownEventType(StreamsError):
    """No rule of the catalog listens to this event type."""


def route_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    catalog: Catalog,
    settings: TidingsSettings,
    now: datetime,
) -> tuple[list[Out], str]:
    """Decide what one record becomes; returns (outputs, outcome). Pure: never raises, never blocks.

    Outcome is `routed`, `unmatched` (rules listen, none matched) or `dlq`. Any exception
    while deciding (a bug, or a shape decoding let through) dead-letters the record with
    reason `internal_error` and the exception's class, so one record can't stop the stage.
    MemoryError alone propagates: the process is then in no state to go on.
    """
    origin = Origin(topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms)

    def dlq(exc: BaseException, reason: str) -> tuple[list[Out], str]:
        return [
            dead_letter(
                settings.topics.dlq, topic=topic, partition=partition, offset=offset,
                timestamp_ms=timestamp_ms, key=key, value=value, headers=headers, error=exc,
                stage="route", reason=reason,
            )
        ], "dlq"  # fmt: skip

    try:
        return _decide(value, headers, origin, catalog, settings, now, dlq)
    except MemoryError:
        raise
    except Exception as exc:
        log.error(
            "route: %s: unexpected %s; dead-lettered", origin, type(exc).__name__, exc_info=True,
            extra={"stage": "route", "topic": topic, "partition": partition, "offset": offset},
        )  # fmt: skip
        return dlq(exc, INTERNAL_ERROR)


def _decide(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    origin: Origin,
    catalog: Catalog,
    settings: TidingsSettings,
    now: datetime,
    dlq: Callable[[BaseException, str], tuple[list[Out], str]],
) -> tuple[list[Out], str]:
    # The decision proper; every expected failure is a dlq() with its own reason.
    t = settings.topics
    timestamp_ms = origin.timestamp_ms
    try:
        env = decode_event(value, headers, origin, settings.route.limits)
    except InvalidEventError as exc:
        return dlq(exc, codes.INVALID_EVENT)
    if not catalog.rules_for(env.type):
        if settings.route.unknown_types == "skip":
            return [], "unmatched"
        return dlq(
            UnknownEventType(
                f"{origin}: no rule of catalog {catalog.version} listens to event type "
                f"{env.type!r}; add a rule for it, or set TIDINGS_ROUTE__UNKNOWN_TYPES=skip"
            ),
            codes.UNKNOWN_TYPE,
        )
    try:
        matches = catalog.evaluate(env.as_cel(), now)
    except CatalogError as exc:
        return dlq(exc, codes.RULE_ERROR)
    if not matches:
        return [], "unmatched"
    outs: list[Out] = []
    for m in matches:
        n = Notification(
            id=notification_id(env.source, env.id, m.rule_id, m.recipient, m.channel),
            event_id=env.id,
            event_source=env.source,
            event_type=env.type,
            tenant=env.tenant,
            rule_id=m.rule_id,
            rule_version=m.rule_version,
            template_id=m.template_id,
            template_version=m.template_version,
            catalog_version=catalog.version,
            channel=m.channel,
            recipient=m.recipient,
            priority=m.priority,
            category=m.category,
            variables=m.variables,
            locale=m.locale or None,
            event_time_ms=timestamp_ms,
        )
        # Keyed by recipient: one recipient's notifications stay in order on one partition.
        outs.append(Out(t.dispatch(m.channel), n.encode(), m.recipient.encode()))
        st = build_status(n, "queued", stage="route", now=now)
        outs.append(Out(t.status, st.encode(), st.key(), st.headers()))
    return outs, "routed"


class RouteStage:
    """Consume domain topics, route, and commit outputs + offsets in one transaction per batch."""

    name = "route"

    def __init__(self, ctx: StageContext) -> None:
        self._s = ctx.settings
        self._catalog = ctx.require_catalog("route")
        self._stop = ctx.stop
        self._metrics = ctx.metrics
        # Set by an in-process deliver stage while it is full: routing further ahead would
        # only take the CPU (and the GIL) from the stage that is behind.
        self._deliver_full = ctx.deliver_full
        self._tracing = ctx.tracing
        self._epoch = 0  # counts rebalance callbacks: a batch fetched across one is redone

    def run(self) -> None:
        """Route until `stop` is set; blocks. Raises FatalStageError on a non-retriable error.

        A broker outage is ridden out: the transaction is retried until the broker is back.
        """
        s = self._s
        member = claim_identity(s.groups.route, s.runtime.local_dir, s.runtime.instance_id)
        consumer = make_consumer(s, s.groups.route, member)
        outage = Outage("route", "kafka", limit_s=None, metrics=self._metrics)
        txn = TransactionalOutput(
            lambda: make_producer(s, member.transactional_id), consumer, outage, self._stop,
            stop_grace_s=s.runtime.drain_timeout_s, metrics_incr=self._metrics.incr,
            dlq_topic=s.topics.dlq, counter=OutputCounter("route", s.topics),
        )  # fmt: skip
        try:
            log.info("route: registering producer %s", member.transactional_id)
            txn.init()
        except TransactionAborted:
            consumer.close()
            member.release()
            return
        log.info("route: joining group %s as %s", s.groups.route, member.instance)
        self._subscribe(consumer)
        paused = False
        try:
            while not self._stop.is_set():
                self._metrics.beat("route")
                try:
                    paused = self._step(consumer, txn, paused)
                except ConsumerFenced as exc:
                    consumer = self._rebuild(consumer, member, txn, exc)
                    paused = False
        finally:
            consumer.close()
            txn.close()
            member.release()

    def _rebuild(
        self, old: Consumer, member: MemberIdentity, txn: TransactionalOutput, exc: BaseException
    ) -> Consumer:
        # The uncommitted batch is simply redone: the new consumer starts from committed.
        log.warning("route: %s; building a new consumer (resuming from committed offsets)", exc)
        with contextlib.suppress(KafkaException):
            old.close()
        consumer = make_consumer(self._s, self._s.groups.route, member)
        txn.rebind(consumer)
        self._subscribe(consumer)
        return consumer

    def _subscribe(self, consumer: Consumer) -> None:
        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            self._epoch += 1
            if self._deliver_full is not None and self._deliver_full.is_set():
                c.pause(parts)  # joins the paused state the loop is in

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            self._epoch += 1

        consumer.subscribe(
            list(self._s.topics.events), on_assign=on_assign, on_revoke=on_revoke,
            on_lost=on_revoke,
        )  # fmt: skip

    def _step(self, consumer: Consumer, txn: TransactionalOutput, paused: bool) -> bool:
        """One poll → route → commit round; returns whether the consumer is paused."""
        s = self._s
        if self._deliver_full is not None:
            if self._deliver_full.is_set():
                assigned = consumer.assignment()
                consumer.pause(assigned)
                PAUSED_PARTITIONS.labels("route").set(len(assigned))
                # Serves rebalances. Paused (new partitions are paused on assignment), so no
                # record should come back; one that does is put back, never dropped.
                m = consumer.poll(0.05)
                if m is not None and m.error() is None:
                    consumer.seek(
                        TopicPartition(m.topic() or "", m.partition() or 0, m.offset() or 0)
                    )
                return True
            if paused:
                consumer.resume(consumer.assignment())
                PAUSED_PARTITIONS.labels("route").set(0)
                paused = False
        epoch = self._epoch
        # Wait for the first record only, then take what is already fetched: a batch never
        # waits to fill up, so a quiet topic adds no latency.
        msgs = poll_batch(consumer, s.runtime.poll_timeout_s, s.runtime.batch_size)
        if not msgs:
            return paused
        if self._epoch != epoch:
            # A rebalance ran inside this fetch: records of a partition revoked meanwhile
            # may be in hand, and their new owner may be routing them already. Put the batch
            # back (owned partitions) instead of committing offsets that are no longer ours.
            self._rewind(consumer, msgs)
            return paused
        in_flight = IN_FLIGHT.labels("route")
        in_flight.set(len(msgs))
        outs, offsets, counts = self._route_batch(msgs)
        try:
            txn.commit(outs, offsets)
        except TransactionAborted as exc:
            log.warning("route: %s; rewinding %d partition(s)", exc, len(offsets))
            self._rewind(consumer, msgs)
            return paused
        finally:
            in_flight.set(0)
        for k, v in counts.items():
            self._metrics.incr(k, v)
        routed = counts["events_in"] - counts["dlq"] - counts["unmatched"]
        for outcome, n in (("matched", routed), ("unmatched", counts["unmatched"]),
                           ("dead_lettered", counts["dlq"])):  # fmt: skip
            if n:
                EVENTS_ROUTED.labels(outcome).inc(n)
        return paused

    def _route_batch(self, msgs: list[Message]) -> tuple[list[Out], dict[TP, int], dict[str, int]]:
        catalog = self._catalog.current  # one version for the whole batch
        now = datetime.now(UTC)
        outs: list[Out] = []
        offsets: dict[TP, int] = {}
        counts: dict[str, int] = {"events_in": 0, "queued": 0, "dlq": 0, "unmatched": 0}
        for m, topic, part, off in records(msgs, "route"):
            headers = norm_headers(m.headers())
            got, outcome = route_record(
                topic=topic, partition=part, offset=off, timestamp_ms=m.timestamp()[1],
                key=m.key(), value=m.value(), headers=headers,
                catalog=catalog, settings=self._s, now=now,
            )  # fmt: skip
            if got and outcome == "routed":
                got = self._traced(m, topic, part, off, headers, got)
            outs.extend(got)
            offsets[(topic, part)] = off + 1
            counts["events_in"] += 1
            if outcome == "routed":
                counts["queued"] += len(got) // 2
            else:
                counts[outcome] += 1
        return outs, offsets, counts

    def _traced(
        self, m: Message, topic: str, part: int, off: int, headers: list[tuple[str, bytes | None]],
        outs: list[Out],
    ) -> list[Out]:  # fmt: skip
        """`outs` carrying the trace context on: the event's own (no tracer), or the spans'.

        The `queued` statuses carry the route span; each dispatch record its publish span.
        """
        tracing = self._tracing
        if tracing.tracer is None:
            passed = [(k, v.encode()) for k, v in carried(headers).items()]
            if not passed:
                return outs
            return [Out(o.topic, o.value, o.key, [*o.headers, *passed]) for o in outs]
        span = tracing.consume_span(topic, part, off, m.key(), self._s.groups.route,
                                    context_of(headers))  # fmt: skip
        try:
            mine = span_headers(span)
            traced = []
            for o in outs:
                if o.topic == self._s.topics.status:
                    traced.append(Out(o.topic, o.value, o.key, [*o.headers, *mine]))
                    continue
                pub = tracing.publish_span(o.topic, o.key, span)
                traced.append(Out(o.topic, o.value, o.key, [*o.headers, *span_headers(pub)]))
                pub.end()
            span.set_attribute("tidings.notifications", len(outs) // 2)
            return traced
        finally:
            span.end()

    @staticmethod
    def _rewind(consumer: Consumer, msgs: list[Message]) -> None:
        first: dict[TP, int] = {}
        for m in msgs:
            if m.error() is None:
                tp = (m.topic() or "", m.partition() or 0)
                first.setdefault(tp, m.offset() or 0)
        try:
            owned = {(p.topic, p.partition) for p in consumer.assignment()}
            tps = [TopicPartition(t, p) for (t, p) in first if (t, p) in owned]
            # A commit whose outcome was unknown may have gone through after all (a rebuilt
            # producer completes it): never rewind below what is committed.
            committed = {
                (c.topic, c.partition): c.offset
                for c in (consumer.committed(tps, timeout=10) if tps else [])
            }
            for part in tps:
                key = (part.topic, part.partition)
                off = max(first[key], committed.get(key, -1))
                consumer.seek(TopicPartition(part.topic, part.partition, off))
        except KafkaException as exc:
            # A consumer that can't seek can't be trusted with its position: start afresh.
            raise ConsumerFenced(f"route: rewind failed: {exc.args[0].str()}") from exc
