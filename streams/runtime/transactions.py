"""Produce records and commit consumer offsets in one Kafka transaction, through broker outages.

librdkafka's transactional error model, as its documentation states it:

- **retriable** (`err.retriable()`, e.g. a timeout while the broker is away): the
  *same call* may be repeated. `send_offsets_to_transaction` is retried until it
  succeeds before `commit_transaction` is ever called, so outputs are never
  committed without their input offsets;
- **abortable** (`err.txn_requires_abort()`): abort, and the caller rewinds its
  consumer and redoes the batch;
- **fatal** (`err.fatal()`, e.g. a fenced producer): the producer is unusable; it is
  rebuilt with the same transactional.id (fencing whatever is left of the old one)
  and the caller rewinds to the committed offsets.

While the broker is unreachable the calls are retried with bounded backoff for as
long as it takes (one log line when it goes, one when it is back). Once the stage is
asked to stop, they are retried for at most `stop_grace_s` more; then the batch is
given up (nothing of it is visible) and redone by whoever runs next.

An output the broker refuses for good (too large for its topic, invalid there) would
fail its batch on every redo; with a `dlq_topic`, the batch is committed once more with
each refused output replaced by its dead letter (reason `output_refused`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.exceptions import FatalStageError, TransactionAborted
from streams.observe.metric_defs import TRANSACTIONS
from streams.runtime.dead_letter import refused_output
from streams.runtime.outage import Outage
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import TP, Out

__all__ = ["TransactionalOutput"]

log = logging.getLogger(__name__)


# Configuration errors: retrying or rebuilding can't help, the operator must act.
_REFUSED = {
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.INVALID_TRANSACTION_TIMEOUT,
    KafkaError._UNSUPPORTED_FEATURE,
}

# One record refused for good, whatever the retry: the broker's topic can't take it.
_RECORD_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_MSG,
    KafkaError.POLICY_VIOLATION,
}

# How long one transactional call may keep failing retriably before the producer is rebuilt.
_STUCK_S = 15.0
# How much longer than its own timeout a client call may take before it counts as hung.
_GRACE_S = 5.0


class _Abort(Exception):
    """Internal: the transaction must be aborted."""


class _Rebuild(Exception):
    """Internal: the producer is fatally broken and must be replaced."""


class TransactionalOutput:
    """One stage member's transactional producer, bound to its consumer's group metadata."""

    def __init__(
        self,
        make_producer: Callable[[], Producer],
        consumer: Consumer,
        outage: Outage,
        stop: threading.Event,
        *,
        timeout_s: float = 10.0,
        stop_grace_s: float = 10.0,
        metrics_incr: Callable[[str, int], None] | None = None,
        dlq_topic: str | None = None,
        counter: OutputCounter | None = None,
    ) -> None:
        self._make = make_producer
        self._dlq = dlq_topic
        self._refused: dict[int, str] = {}  # output index → why the broker refused it
        self._consumer = consumer
        self._outage = outage
        self._stop = stop
        self._timeout_s = timeout_s
        self._stop_grace_s = stop_grace_s
        self._stop_seen: float | None = None
        self._incr = metrics_incr or (lambda _name, _n: None)
        self._counter = counter
        self._producer: Producer | None = None
        self._last_error = ""
        self._gave_up = False
        self._hung = False

    @property
    def producer(self) -> Producer:
        """The current producer (after `init`)."""
        assert self._producer is not None, "init() first"
        return self._producer

    def init(self) -> None:
        """Create the producer and register its transactional.id; blocks until the broker answers.

        Fences and aborts whatever a dead incarnation with the same id left open. Raises
        TransactionAborted if asked to stop first, FatalStageError on a non-retriable error
        (e.g. not authorised).
        """
        while True:
            self._producer = self._make()
            try:
                self._retry(lambda: self.producer.init_transactions(self._timeout_s), "init")
                return
            except (_Abort, _Rebuild) as exc:
                if self._giving_up():
                    raise TransactionAborted("stopping before the producer was ready") from exc
                log.warning("%s: producer init failed (%s); building it again", self._name, exc)
                # Bounded pace: a producer fenced by a live twin (same id) must not spin.
                time.sleep(self._outage.failed(exc))

    def commit(
        self, outs: list[Out], offsets: dict[TP, int], group_metadata: Any | None = None
    ) -> None:
        """Produce `outs` and commit `offsets` atomically; blocks until the broker confirms.

        `group_metadata`: the consumer's group metadata from *before* the records were
        fetched; a rebalance since then makes the commit fail (and the batch be redone)
        instead of committing offsets of partitions another member may own by now.
        Raises TransactionAborted: nothing of the batch is visible, rewind and redo it (the
        producer may have been rebuilt meanwhile). Once a stop gave up, every commit does.
        """
        if not outs and not offsets:
            return
        if self._gave_up:
            raise TransactionAborted("stopping: the broker stayed unreachable; not committing")
        for attempt in (1, 2):
            self._refused = {}
            try:
                self._attempt(outs, offsets, group_metadata)
            except _Abort as exc:
                self._incr("txn_aborts", 1)
                TRANSACTIONS.labels(self._name, "abort").inc()
                self._abort()
                if attempt == 1 and self._refused and self._dlq and not self._gave_up:
                    outs = self._divert(outs)
                    continue
                raise TransactionAborted(f"transaction aborted: {exc}") from exc
            except _Rebuild as exc:
                self._incr("txn_aborts", 1)
                TRANSACTIONS.labels(self._name, "abort").inc()
                self._rebuild(exc)
                raise TransactionAborted(f"producer rebuilt after a fatal error: {exc}") from exc
            self._incr("txn_commits", 1)
            TRANSACTIONS.labels(self._name, "commit").inc()
            if self._counter is not None:
                self._counter.produced(outs)
            return

    def _attempt(self, outs: list[Out], offsets: dict[TP, int], group_metadata: Any) -> None:
        p = self.producer
        self._retry(p.begin_transaction, "begin")
        for i, o in enumerate(outs):
            self._produce(i, o)
        if offsets:
            tps = [TopicPartition(t, part, off) for (t, part), off in offsets.items()]
            self._retry(
                lambda: p.send_offsets_to_transaction(
                    tps, group_metadata or self._consumer.consumer_group_metadata(),
                    self._timeout_s,
                ),
                "send offsets",
            )  # fmt: skip
        self._retry(lambda: p.commit_transaction(self._timeout_s), "commit")

    def _divert(self, outs: list[Out]) -> list[Out]:
        """`outs` with each refused output replaced by its dead letter."""
        for i, why in sorted(self._refused.items()):
            log.warning(
                "%s: the broker refused an output for %s for good (%s); dead-lettering it "
                "(reason output_refused; raise the topic's max.message.bytes, then "
                "`tidings dlq replay --reason output_refused`)", self._name, outs[i].topic, why,
            )  # fmt: skip
            self._incr("dlq", 1)
        assert self._dlq is not None
        return [
            refused_output(self._dlq, o, self._refused[i], self._name) if i in self._refused
            else o
            for i, o in enumerate(outs)
        ]  # fmt: skip

    def rebind(self, consumer: Consumer) -> None:
        """Commit the offsets of `consumer` from now on (after the stage rebuilt its consumer)."""
        self._consumer = consumer

    def close(self, timeout_s: float = 5.0) -> None:
        """Serve what is left of delivery reports, bounded; never raises."""
        if self._producer is not None:
            try:
                self._producer.flush(timeout_s)
            except KafkaException:
                log.debug("%s: flush on close failed", self._name, exc_info=True)

    # ------------------------------------------------------------ internals

    @property
    def _name(self) -> str:
        return self._outage.stage

    def _giving_up(self) -> bool:
        if not self._stop.is_set():
            return False
        now = time.monotonic()
        if self._stop_seen is None:
            self._stop_seen = now
        if now - self._stop_seen >= self._stop_grace_s:
            self._gave_up = True
        return self._gave_up

    def _retry(self, call: Callable[[], Any], what: str) -> None:
        first_failure: float | None = None
        while True:
            try:
                self._bounded(call, what)
                self._outage.ok()
                self._last_error = ""
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() in _REFUSED:
                    raise FatalStageError(
                        f"{self._name}: {what} refused: {err.str()}; grant the principal the "
                        "transactional and group ACLs, or fix the setting (docs/operations.md)"
                    ) from exc
                if err.fatal():
                    raise _Rebuild(f"{what}: {err.str()}") from exc
                if err.txn_requires_abort():
                    raise _Abort(f"{what}: {err.str()}") from exc
                if not err.retriable() and err.code() != KafkaError._TIMED_OUT:
                    # Neither retriable nor abortable (e.g. an invalid state after an
                    # earlier failure): a fresh producer is the only safe way on.
                    raise _Rebuild(f"{what}: {err.str()}") from exc
                now = time.monotonic()
                first_failure = first_failure or now
                if what != "init" and now - first_failure > _STUCK_S:
                    # librdkafka can stay wedged on a call after its broker came back; a new
                    # producer with the same id resolves the open transaction (completes or
                    # aborts it) at init, and the caller rewinds to the committed offsets.
                    raise _Rebuild(
                        f"{what}: still failing after {_STUCK_S:.0f} s: {err.str()}"
                    ) from exc
                text = f"{what}: {err.str()}"
                if text != self._last_error:
                    self._last_error = text
                    log.info("%s: transaction %s failed, retrying the same call", self._name, text)
                wait = self._outage.failed(exc)
                if self._giving_up():
                    raise _Abort(f"{what}: still failing at stop ({err.str()})") from exc
                time.sleep(wait)

    def _produce(self, i: int, o: Out) -> None:
        p = self.producer

        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None and err.code() in _RECORD_REFUSED:
                self._refused[i] = err.str()

        while True:
            try:
                p.produce(
                    o.topic, value=o.value, key=o.key, headers=cast(Any, o.headers),
                    on_delivery=report,
                )  # fmt: skip
                return
            except BufferError:
                if self._giving_up():
                    raise _Abort("the local produce queue stayed full at stop") from None
                p.poll(0.05)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise _Rebuild(f"produce: {err.str()}") from exc
                if err.code() in _RECORD_REFUSED:
                    self._refused[i] = err.str()
                raise _Abort(f"produce: {err.str()}") from exc

    def _abort(self) -> None:
        try:
            self._retry(lambda: self.producer.abort_transaction(self._timeout_s), "abort")
        except _Rebuild as exc:
            self._rebuild(exc)
        except _Abort:
            # Still failing at stop: the broker aborts it when the next incarnation (same
            # transactional.id) calls init_transactions, or at transaction.timeout.ms.
            log.warning("%s: could not abort the transaction before stopping", self._name)

    def _bounded(self, call: Callable[[], Any], what: str) -> None:
        """Run a blocking client call on the caller thread's helper, for at most its timeout.

        librdkafka has been seen to block in `send_offsets_to_transaction` far past its
        timeout after a broker restart (a thread dump of issue 10's hang). A call that
        doesn't return in time is left to its thread; the producer is rebuilt (the new
        incarnation, same id, fences the stuck one, whose call then fails and returns).
        """
        done = threading.Event()
        box: list[BaseException] = []

        def run() -> None:
            try:
                call()
            except BaseException as exc:
                box.append(exc)
            finally:
                done.set()

        # A daemon thread: one stuck for good must not hold the process at exit.
        threading.Thread(target=run, name=f"{self._name}-txn", daemon=True).start()
        if not done.wait(self._timeout_s + _GRACE_S):
            self._hung = True
            raise _Rebuild(
                f"{what}: no answer from librdkafka within {self._timeout_s + _GRACE_S:.0f} s"
            )
        if box:
            raise box[0]

    def _rebuild(self, why: BaseException) -> None:
        log.warning("%s: transactional producer unusable (%s); building a new one", self._name, why)
        old, self._producer = self._producer, None
        if self._hung:
            # Its call is still blocked inside the client: touching it could block us too.
            self._hung = False
            old = None
        if old is not None:
            try:
                old.purge()
            except KafkaException:
                log.debug("%s: purge of the old producer failed", self._name, exc_info=True)
        self.init()
