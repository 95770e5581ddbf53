"""The deliver stage's Kafka half: consume dispatch topics, track offsets, commit in transactions.

The consumer thread owns every Kafka call. It hands records to the
`DeliverWorker` (asyncio, its own thread), collects completions, and every
`commit_interval_s` produces the outputs of the finished prefix of each
partition together with its offsets in one transaction. When the worker is
full it pauses the partitions instead of sleeping; when one input topic (one
channel, or one retry tier) has `max_in_flight_per_topic` records in flight,
only that topic's partitions pause, so a slow provider holds back only its own
channel. On revoke it drains the
revoked partitions (bounded by `drain_timeout_s`) and commits before letting go.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from catalog import KNOWN_CHANNELS
from processors.provider import Provider
from processors.registry import build_providers
from streams.exceptions import (
    ConsumerFenced,
    FatalStageError,
    StageStopping,
    TransactionAborted,
)
from streams.observe.metric_defs import IN_FLIGHT, PAUSED_PARTITIONS
from streams.runtime.flow import FlowController
from streams.runtime.kafka import (
    TransactionalOutput,
    consumer_fatal,
    make_consumer,
    make_producer,
    records,
    retry_topic,
)
from streams.runtime.member import MemberIdentity, claim_identity
from streams.runtime.offsets import OffsetTracker
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import TP, norm_headers
from streams.runtime.stage import StageContext, poll_batch
from streams.stages.deliver_recheck import PreferenceRecheck
from streams.stages.deliver_worker import DUE_HEADER, Completion, DeliverWorker, Item
from streams.state import ClaimStore, DeliveryLog, Directory
from streams.state.db import wait_for_migrations

__all__ = ["DeliverStage"]

log = logging.getLogger(__name__)


class DeliverStage:
    """Consume `notification.dispatch.<channel>` and deliver, exactly once per notification."""

    name = "deliver"

    def __init__(
        self,
        ctx: StageContext,
        *,
        channels: Iterable[str] = KNOWN_CHANNELS,
        providers: dict[str, Provider] | None = None,
    ) -> None:
        settings = self._s = ctx.settings
        self._catalog = ctx.require_catalog("deliver")
        self._stop = ctx.stop
        self._metrics = ctx.metrics
        self._channels = tuple(channels)
        self._providers = providers
        self._tracker = OffsetTracker()
        self._gen: dict[TP, int] = {}
        self._done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._flow = FlowController(ctx.deliver_full)
        self._send_hook = ctx.send_hook
        self._tracing = ctx.tracing
        self._closing = False
        self._retry_topics = {retry_topic(settings, t) for t in settings.runtime.retry_tiers_s}
        self._consumer: Consumer | None = None
        self._txn: TransactionalOutput | None = None
        self._worker: DeliverWorker | None = None
        self._kafka: Outage | None = None
        # Per partition: the first offset consumed since its last commit (where a rewind
        # goes back to when the group has no committed offset for it yet).
        self._floor: dict[TP, int] = {}

    def run(self) -> None:
        """Deliver until `stop` is set; blocks. Raises FatalStageError on unrecoverable errors.

        Kafka, Postgres and Redis outages are ridden out (paused, retried with backoff).
        """
        s = self._s
        pg = Outage("deliver", "postgres", limit_s=s.runtime.outage_limit_s, metrics=self._metrics)
        try:
            wait_for_migrations(s.postgres.conninfo(), "deliver", self._stop, pg)
        except StageStopping:
            return
        providers = self._providers if self._providers is not None else build_providers(s)
        member = claim_identity(s.groups.deliver, s.runtime.local_dir, s.runtime.instance_id)
        claims = ClaimStore(
            s.redis.url.get_secret_value(),
            DeliveryLog(s.postgres.conninfo()),
            lease_s=s.runtime.claim_lease_s,
            ttl_s=s.redis.dedup_ttl_s,
            member=member.incarnation,
            member_ttl_s=s.runtime.member_ttl_s,
        )
        directory = Directory(s.postgres.conninfo(), name="deliver")
        self._worker = DeliverWorker(
            s, self._catalog, providers, claims, self._done,
            metrics=self._metrics, slot=f"{member.group}:{member.instance}",
            send_hook=self._send_hook, tracing=self._tracing,
            recheck=PreferenceRecheck(directory),
        )  # fmt: skip
        self._worker.start()
        consumer = self._consumer = make_consumer(s, s.groups.deliver, member)
        self._kafka = Outage("deliver", "kafka", limit_s=None, metrics=self._metrics)
        self._txn = TransactionalOutput(
            lambda: make_producer(s, member.transactional_id), consumer, self._kafka, self._stop,
            stop_grace_s=s.runtime.drain_timeout_s, metrics_incr=self._metrics.incr,
            dlq_topic=s.topics.dlq, counter=OutputCounter("deliver", s.topics),
        )  # fmt: skip
        try:
            log.info("deliver: registering producer %s", member.transactional_id)
            self._txn.init()
        except TransactionAborted:
            self._closing = True
            self._worker.stop(10.0)
            consumer.close()
            directory.close()
            member.release()
            return
        log.info("deliver: joining group %s as %s", s.groups.deliver, member.instance)
        self._subscribe(consumer)
        IN_FLIGHT.labels("deliver").set_function(lambda: self._tracker.in_flight)
        PAUSED_PARTITIONS.labels("deliver").set_function(lambda: self._flow.paused_count)
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                self._metrics.beat("deliver")
                try:
                    self._step()
                    if time.monotonic() - last_commit >= s.runtime.commit_interval_s:
                        self._commit()
                        last_commit = time.monotonic()
                except ConsumerFenced as exc:
                    self._rebuild_consumer(member, exc)
            self._drain(self._tracker.partitions(), s.runtime.drain_timeout_s)
            self._commit()
        finally:
            self._closing = True
            self._worker.stop(s.runtime.drain_timeout_s)
            with contextlib.suppress(KafkaException):
                self._consumer.close()  # revoke callback finds nothing left to drain
            self._txn.close()
            directory.close()
            member.release()

    def _subscribe(self, consumer: Consumer) -> None:
        s = self._s
        consumer.subscribe(
            [s.topics.dispatch(c) for c in self._channels] + sorted(self._retry_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _step(self) -> None:
        """One round: collect completions, then fetch more or (when full) pause."""
        s = self._s
        consumer = self._consumer
        assert consumer is not None
        self._check_worker()
        self._flow.release_due(consumer, time.time() * 1000)
        self._collect(block_s=0.0)
        room = s.runtime.max_in_flight - self._tracker.in_flight
        if room <= 0:
            self._flow.pause_all(consumer)
            self._collect(block_s=0.02)
            # Serves rebalances and keeps the group alive; paused, so only errors come back
            # (a fatal one raises ConsumerFenced in StageConsumer.consume).
            for m in consumer.consume(1, 0):
                if m.error() is None:  # not expected while paused; put it back, never drop it
                    consumer.seek(TopicPartition(m.topic() or "", m.partition() or 0,
                                                 m.offset() or 0))  # fmt: skip
            return
        self._flow.resume_all(consumer)
        full = self._tracker.topics_at(s.runtime.max_in_flight_per_topic)
        if added := self._flow.limit_topics(consumer, full):
            log.debug("deliver: %s at the in-flight bound; pausing only those", sorted(added))
        n = min(room, s.runtime.batch_size)
        if self._tracker.in_flight:
            msgs = consumer.consume(n, 0.002)
        else:
            msgs = poll_batch(consumer, s.runtime.poll_timeout_s, n)  # idle: wait for one
        if msgs:
            self._submit(msgs)

    def _rebuild_consumer(self, member: MemberIdentity, exc: BaseException) -> None:
        """Replace an unusable consumer; everything in flight is let go and redone."""
        log.warning("deliver: %s; building a new consumer (resuming from committed)", exc)
        old = self._consumer
        assert old is not None and self._txn is not None
        self._forget(self._tracker.partitions() + self._flow.held)
        self._closing = True  # the old consumer's revoke callback must not drain or commit
        try:
            with contextlib.suppress(KafkaException):
                old.close()
        finally:
            self._closing = False
        self._flow.reset()
        consumer = self._consumer = make_consumer(self._s, self._s.groups.deliver, member)
        self._txn.rebind(consumer)
        self._subscribe(consumer)
        log.info("deliver: new consumer subscribed as %s", member.instance)

    # ------------------------------------------------------------ records in

    def _submit(self, msgs: list[Message]) -> None:
        items: list[Item] = []
        now_ms = time.time() * 1000
        for m, topic, part, off in records(msgs, "deliver"):
            tp = (topic, part)
            if self._flow.is_held(tp):
                continue  # behind a parked record: fetched again once the partition resumes
            if topic in self._retry_topics and self._hold(m, tp, off, now_ms):
                continue
            self._tracker.add(tp, off)
            self._floor.setdefault(tp, off)
            items.append(
                Item(tp, off, self._gen.get(tp, 0), m.key(), m.value(),
                     norm_headers(m.headers()), m.timestamp()[1])
            )  # fmt: skip
        if items:
            assert self._worker is not None
            self._worker.submit(items)

    def _hold(self, m: Message, tp: TP, off: int, now_ms: float) -> bool:
        """Park a retry partition whose head is not due yet: seek back, pause, resume when due."""
        due = dict(norm_headers(m.headers())).get(DUE_HEADER)
        try:
            due_ms = float(due) if due else 0.0
        except ValueError:
            due_ms = 0.0  # unreadable: treat as due rather than park it forever
        if due_ms <= now_ms:
            return False
        assert self._consumer is not None
        self._flow.hold(self._consumer, tp, off, due_ms)
        return True

    def _collect(self, block_s: float) -> None:
        try:
            c = self._done.get(timeout=block_s) if block_s > 0 else self._done.get_nowait()
        except queue.Empty:
            return
        while True:
            if self._gen.get(c.tp, 0) == c.gen:
                self._tracker.done(c.tp, c.offset, c.outs)
                for k, v in c.counts.items():
                    self._metrics.incr(k, v)
            try:
                c = self._done.get_nowait()
            except queue.Empty:
                return

    def _check_worker(self) -> None:
        if self._worker is not None and self._worker.fatal is not None:
            raise FatalStageError(f"deliver: {self._worker.fatal}") from self._worker.fatal

    # ------------------------------------------------------------ commits

    def _commit(self) -> None:
        offsets, outs = self._tracker.take()
        if not offsets:
            return
        assert self._txn is not None
        try:
            self._txn.commit(outs, offsets)
        except TransactionAborted as exc:
            # Nothing of it is visible. Redo from the committed offsets: the claims make
            # the redo safe (finished sends are found `sent`, in-flight ones `busy`).
            log.warning("deliver: %s; rewinding to the committed offsets", exc)
            self._rewind(list(offsets))
            return
        self._floor.update(offsets)

    def _rewind(self, committing: list[TP]) -> None:
        consumer = self._consumer
        assert consumer is not None
        # Every partition of the aborted commit, including those whose tracked work was all
        # in it (nothing tracked is left of them, but their position is past the lost outputs).
        tps = sorted(set(self._tracker.partitions()) | set(committing))
        floor = {tp: self._floor[tp] for tp in tps if tp in self._floor}
        unheld = self._forget(tps)
        if self._closing or not tps:
            return
        owned = {(p.topic, p.partition) for p in consumer.assignment()}
        tps = [tp for tp in tps if tp in owned]  # a revoked one restarts from committed anyway
        while tps:
            try:
                committed = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
                for c in committed:
                    # Never committed yet: back to the first offset this member consumed
                    # since (skipping the seek would commit past the aborted batch later).
                    off = c.offset if c.offset >= 0 else floor.get((c.topic, c.partition))
                    if c.error is not None or off is None:
                        raise FatalStageError(
                            f"deliver: cannot rewind {c.topic}/{c.partition} after an abort "
                            f"({c.error}); restarting resumes from the committed offset"
                        )
                    consumer.seek(TopicPartition(c.topic, c.partition, off))
                break
            except KafkaException as exc:
                err = exc.args[0]
                if consumer_fatal(err):
                    raise ConsumerFenced(f"deliver: rewind failed: {err.str()}") from exc
                if not (err.retriable() or err.code() == KafkaError._TIMED_OUT):
                    raise FatalStageError(
                        f"deliver: could not rewind after an abort: {exc}"
                    ) from exc
                # Broker away: the rewind must happen before anything else is consumed.
                assert self._kafka is not None
                wait = self._kafka.failed(exc)
                if self._stop.is_set():
                    return  # nothing more is committed: the next owner starts from committed
                time.sleep(wait)
        assert self._kafka is not None
        self._kafka.ok()
        # A parked partition that had records in flight is refetched from the committed
        # offset; it is parked again if its head is still not due. Left paused, it would stall.
        self._flow.wake(consumer, unheld)

    def _drain(self, tps: list[TP], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        wanted = set(tps)
        while time.monotonic() < deadline:
            self._commit()
            if not any(self._tracker.pending(tp) for tp in wanted):
                return
            self._check_worker()
            self._collect(block_s=0.05)
        left = sum(self._tracker.pending(tp) for tp in wanted)
        if left:
            log.warning(
                "deliver: drain timed out with %d record(s) unfinished; they will be redone", left
            )

    # ------------------------------------------------------------ rebalances and back-pressure

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        for p in parts:
            tp = (p.topic, p.partition)
            self._gen[tp] = self._gen.get(tp, 0) + 1
        self._flow.on_assign(consumer, parts)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in parts]
        if not self._closing:
            self._drain(tps, self._s.runtime.drain_timeout_s)
            self._commit()
        self._forget(tps)

    def _on_lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may own them already, so commit nothing.
        self._forget([(p.topic, p.partition) for p in parts])

    def _forget(self, tps: list[TP]) -> list[TP]:
        """Drop what we track of `tps`; returns those that were parked (still paused)."""
        unheld = self._flow.forget(tps)
        for tp in tps:
            self._floor.pop(tp, None)
        dropped = self._tracker.revoke(tps)
        for tp in tps:
            self._gen[tp] = self._gen.get(tp, 0) + 1
        if dropped:
            log.info("deliver: let go of %d unfinished record(s) on revoke", dropped)
        return unheld
