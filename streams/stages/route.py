"""The route stage: domain events → one Notification per (recipient, channel) + `queued` status.

`RouteStage` is the loop: batch `consume()`, decide each record (streams/stages/
route_decide.py: pure), with one recipient-directory lookup for the whole batch's
`- user:` recipients, then produce every output and commit the batch's offsets in one
Kafka transaction (read-process-write exactly once).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from catalog.caps import CapConfigError, CapRequest, CapResult, CapRule, parse_caps
from schemas.notification import Notification
from schemas.recipient import Preferences, Recipient
from streams.exceptions import ConsumerFenced, FatalStageError, StageStopping, TransactionAborted
from streams.observe.metric_defs import EVENTS_ROUTED, IN_FLIGHT, PAUSED_PARTITIONS
from streams.observe.tracing import carried, context_of, span_headers
from streams.runtime.kafka import (
    TransactionalOutput,
    make_consumer,
    make_producer,
    records,
    route_topics,
)
from streams.runtime.member import MemberIdentity, claim_identity
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import TP, Out, norm_headers
from streams.runtime.stage import StageContext, poll_batch
from streams.stages.route_caps import Made, apply_caps, cap_requests
from streams.stages.route_decide import (
    DirectoryView,
    Outcome,
    Planned,
    TenantPrefs,
    UnknownEventType,
    finish_record,
    plan_record,
    route_record,
)
from streams.state.caps import CapStore
from streams.state.directory import Directory
from streams.state.presence import PresenceReader

__all__ = ["RouteStage", "UnknownEventType", "route_record"]

# The requests of one cap check, and the Redis answer to come (None: nothing to count).
_CapCheck = tuple[list[CapRequest], "Future[list[CapResult]] | None"]

log = logging.getLogger(__name__)


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
        self._directory: Directory | None = None  # connects on the first `- user:` lookup
        self._presence: PresenceReader | None = None  # connects when a rule reads it
        self._lookup_pool: ThreadPoolExecutor | None = None
        self._cap_store: CapStore | None = None  # connects on the first capped batch
        self._redis = Outage("route", "redis", limit_s=ctx.settings.runtime.outage_limit_s,
                             metrics=ctx.metrics)  # fmt: skip
        self._caps: tuple[CapRule, ...] = ()
        self._pg = Outage("route", "postgres", limit_s=ctx.settings.runtime.outage_limit_s,
                          metrics=ctx.metrics)  # fmt: skip
        self._epoch = 0  # counts rebalance callbacks: a batch fetched across one is redone
        self._last_commit = 0.0  # monotonic: batches fill until a commit interval after it

    def run(self) -> None:
        """Route until `stop` is set; blocks. Raises FatalStageError on a non-retriable error.

        A broker outage is ridden out: the transaction is retried until the broker is back.
        """
        s = self._s
        try:
            self._caps = parse_caps(list(s.route.caps), where="route.caps")
        except CapConfigError as exc:
            raise FatalStageError(f"route: the caps setting is invalid: {exc}") from exc
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
            if self._lookup_pool is not None:
                self._lookup_pool.shutdown(wait=True, cancel_futures=True)
            if self._directory is not None:
                self._directory.close()
            if self._presence is not None:
                self._presence.close()
            if self._cap_store is not None:
                self._cap_store.close()

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
            list(route_topics(self._s)), on_assign=on_assign,
            on_revoke=on_revoke, on_lost=on_revoke,
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
        # Wait for the first record, then fill the batch until one commit interval after the
        # last commit: a quiet topic adds no latency, a busy one makes at most one
        # transaction per interval, not one per fetch (the broker's cost is per transaction).
        fill_until = self._last_commit + s.runtime.route_commit_interval_s
        msgs = poll_batch(consumer, s.runtime.poll_timeout_s, s.runtime.batch_size, fill_until)
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
        try:
            outs, offsets, counts = self._route_batch(msgs)
        except StageStopping:
            self._rewind(consumer, msgs)  # stopping with Postgres away: redone after restart
            in_flight.set(0)
            return paused
        try:
            txn.commit(outs, offsets)
            self._last_commit = time.monotonic()
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
        """Decide every record of the batch: rules first, then one directory lookup for all
        the batch's `- user:` recipients, then the outputs. Raises StageStopping when asked to
        stop while Postgres is away (the batch is then redone)."""
        catalog = self._catalog.current  # one version for the whole batch
        now = datetime.now(UTC)
        s = self._s
        offsets: dict[TP, int] = {}
        planned: list[tuple[Message, list[tuple[str, bytes | None]], Planned | Outcome]] = []
        # The directory is read while the rules run: the first half's lookup goes out as soon
        # as that half is planned, and Postgres answers it while route plans the second half.
        rows = list(records(msgs, "route"))
        half = (len(rows) + 1) // 2
        keys: set[tuple[str, str]] = set()
        lookups: list[Future[tuple[DirectoryView, TenantPrefs, set[tuple[str, str]]]]] = []
        presence = catalog.reads_presence
        for start, stop in ((0, half), (half, len(rows))):
            fresh: set[tuple[str, str]] = set()
            for m, topic, part, off in rows[start:stop]:
                headers = norm_headers(m.headers())
                plan = plan_record(
                    topic=topic, partition=part, offset=off, timestamp_ms=m.timestamp()[1],
                    key=m.key(), value=m.value(), headers=headers,
                    catalog=catalog, settings=s, now=now,
                )  # fmt: skip
                planned.append((m, headers, plan))
                offsets[(topic, part)] = off + 1
                if isinstance(plan, Planned):
                    fresh.update(k for k in plan.directory_keys() if k not in keys)
            if fresh:
                keys |= fresh
                lookups.append(self._lookups().submit(self._lookup, fresh, presence))
        found: dict[tuple[str, str], Recipient] = {}
        defaults: dict[str, tuple[Preferences, Collection[str]]] = {}
        online: set[tuple[str, str]] = set()
        for f in lookups:
            view, prefs, live = f.result()  # re-raises StageStopping from the lookup
            found.update(view)
            defaults.update(prefs)
            online |= live
        tenants: TenantPrefs = defaults
        made: dict[bytes, Notification] = {}
        counts: dict[str, int] = {"events_in": 0, "queued": 0, "dlq": 0, "unmatched": 0}
        parts: list[list[Out]] = [[], []]
        checks: list[_CapCheck] = []
        for i, (m, headers, plan) in enumerate(planned):
            if isinstance(plan, Planned):
                got, outcome = finish_record(plan, catalog=catalog, settings=s, now=now,
                                             directory=found, tenants=tenants,
                                             made=made, online=online)  # fmt: skip
            else:
                got, outcome = plan
            if got and outcome == "routed":
                got = self._traced(m, m.topic() or "", m.partition() or 0, m.offset() or 0,
                                   headers, got)  # fmt: skip
                counts["queued"] += sum(1 for o in got if o.topic != s.topics.status)
            else:
                counts[outcome] += 1
            counts["events_in"] += 1
            parts[i >= half].extend(got)
            if i == half - 1 and self._caps and keys:
                # Redis counts the first half while route finishes the second.
                checks.append(self._check_caps(parts[0], tenants, now, made))
        if not (self._caps and keys):
            return parts[0] + parts[1], offsets, counts
        if not checks:  # a batch of one record: its half is the second
            checks.append(([], None))
        checks.append(self._check_caps(parts[1], tenants, now, made))
        outs: list[Out] = []
        for chunk, check in zip(parts, checks, strict=True):
            kept, refused = self._capped(chunk, check, now, made)
            outs += kept
            counts["queued"] -= refused
        return outs, offsets, counts

    def _check_caps(
        self, outs: list[Out], tenants: TenantPrefs, now: datetime, made: Made
    ) -> _CapCheck:
        """Start counting `outs` in their caps (one Redis round trip, on the directory
        thread, after any check started before it: caps count in output order)."""
        required = {t: tuple(req) for t, (_, req) in tenants.items()}
        requests = cap_requests(self._s, self._caps, outs, required, made)
        if not requests:
            return requests, None
        if self._cap_store is None:
            self._cap_store = CapStore(self._s.redis.url.get_secret_value())
        store, now_ms = self._cap_store, int(now.timestamp() * 1000)
        # Rides out a Redis outage there; StageStopping comes back through the future.
        job = self._lookups().submit(self._redis.retry, lambda: store.check(requests, now_ms),
                                     self._stop)  # fmt: skip
        return requests, job

    def _capped(
        self, outs: list[Out], check: _CapCheck, now: datetime, made: Made
    ) -> tuple[list[Out], int]:
        """`outs` with the answers of their cap check applied; (outputs, refused)."""
        requests, job = check
        if job is None:
            return outs, 0
        return apply_caps(self._s, outs, requests, job.result(), now, made)

    def _lookups(self) -> ThreadPoolExecutor:
        """The one thread that reads the directory and counts caps (their connections are
        one at a time, and caps must count in order)."""
        if self._lookup_pool is None:
            self._lookup_pool = ThreadPoolExecutor(1, thread_name_prefix="route-directory")
        return self._lookup_pool

    def _lookup(
        self, keys: set[tuple[str, str]], presence: bool
    ) -> tuple[DirectoryView, TenantPrefs, set[tuple[str, str]]]:
        """The directory's records of `keys`, their tenants' defaults and (`presence`)
        those online: one round trip each, for the whole batch; rides out a Postgres outage
        (raises StageStopping); presence never waits for Redis (streams/state/presence.py)."""
        if self._directory is None:
            self._directory = Directory(self._s.postgres.conninfo(), name="route")
        d = self._directory
        found = self._pg.retry(lambda: d.lookup(keys), self._stop)
        tenants = self._pg.retry(lambda: d.tenant_defaults({t for t, _ in keys}), self._stop)
        online: set[tuple[str, str]] = set()
        if presence and found:
            if self._presence is None:
                self._presence = PresenceReader(self._s.redis.url.get_secret_value())
            online = self._presence.online(found.keys())
        return found, tenants, online

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
            if not span.is_recording():
                # Not sampled: every output carries the same context (flag 0, so nothing
                # downstream records either), and no child span is made at all.
                return [Out(o.topic, o.value, o.key, [*o.headers, *mine]) for o in outs]
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
