"""Read the dead-letter topic and put records back (`tidings dlq` is streams/cli/dlq.py).

Reading never touches a consumer group that matters: each read uses a fresh,
random group id, `assign()`s partitions explicitly (no group join, no
rebalance), reads from the low to the high watermark and never commits.

Replay is idempotent. See `replay` for why.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import TidingsSettings
from streams.dlq.select import (
    DeadLetter,
    Selection,
    replay_headers,
    replay_marker,
)
from streams.exceptions import ReadStalled, StreamsError, TopicMissing
from streams.runtime.kafka import make_producer
from streams.runtime.reader import TopicReader

__all__ = [
    "DlqError",
    "read_one",
    "read_records",
    "replay",
    "replayed_ids",
    "replayed_topic",
    "select",
]

_TIMEOUT_S = 30.0
_BATCH = 200  # dead letters per replay transaction
_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class DlqError(StreamsError):
    """A problem the operator must fix (missing topic, broker gone); the message says which."""


def replayed_topic(dlq_topic: str) -> str:
    """The compacted topic recording which DLQ records were replayed."""
    return f"{dlq_topic}.replayed"


# ---------------------------------------------------------------- reading


def read_records(
    s: TidingsSettings, topic: str, *, missing_ok: bool = False, idle_s: float = _TIMEOUT_S
) -> Iterator[DeadLetter]:
    """Every committed record of `topic` up to the high watermark as of the call.

    Raises DlqError when the topic is missing (unless `missing_ok`: then yields
    nothing) or when nothing arrives for `idle_s` while records are still due.
    Reads with isolation.level=read_committed, so records of aborted transactions
    are never seen, and an open transaction ends the read at its first offset.
    """
    reader = TopicReader(s, topic, idle_s=idle_s, purpose="dlq-reader")
    try:
        try:
            reader.open()
        except TopicMissing:
            if missing_ok:
                return
            raise DlqError(
                f"topic {topic} does not exist: check topics.dlq (TIDINGS_TOPICS__DLQ) and "
                "kafka.bootstrap_servers, or create it with `tidings topics ensure`"
            ) from None
        for r in reader:
            yield DeadLetter(
                partition=r.partition, offset=r.offset, timestamp_ms=r.timestamp_ms,
                key=r.key, value=r.value, headers=r.headers,
            )  # fmt: skip
    except ReadStalled as exc:
        raise DlqError(str(exc)) from exc
    finally:
        reader.close()


def read_one(s: TidingsSettings, topic: str, partition: int, offset: int) -> DeadLetter | None:
    """The committed record at `partition:offset` of `topic`, or None when there is none.

    Raises DlqError when the topic is missing or Kafka doesn't answer.
    """
    reader = TopicReader(
        s, topic, offset=offset, limit=1, partitions=(partition,), purpose="dlq-reader"
    )
    try:
        with reader:
            for r in reader:
                if r.offset != offset:
                    return None  # an aborted record or a transaction marker: not a dead letter
                return DeadLetter(r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
        return None
    except TopicMissing as exc:
        raise DlqError(f"{exc}: check topics.dlq (TIDINGS_TOPICS__DLQ)") from exc
    except ReadStalled as exc:
        raise DlqError(str(exc)) from exc


def replayed_ids(s: TidingsSettings) -> set[str]:
    """Ids of the DLQ records already replayed (keys of `<dlq>.replayed`; tombstones undo)."""
    done: set[str] = set()
    for r in read_records(s, replayed_topic(s.topics.dlq), missing_ok=True):
        key = (r.key or b"").decode("utf-8", "replace")
        if r.value:
            done.add(key)
        else:
            done.discard(key)
    return done


def select(s: TidingsSettings, sel: Selection) -> list[DeadLetter]:
    found = [dl for dl in read_records(s, s.topics.dlq) if sel.matches(dl)]
    return sorted(found, key=lambda dl: (dl.timestamp_ms, dl.partition, dl.offset))


# ---------------------------------------------------------------- replay


def _ensure_replayed_topic(s: TidingsSettings) -> None:
    name = replayed_topic(s.topics.dlq)
    admin = AdminClient(s.kafka.client_config())
    if name in admin.list_topics(timeout=_TIMEOUT_S).topics:
        return
    topic = NewTopic(name, 1, s.kafka.replication_factor, config={"cleanup.policy": "compact"})
    for fut in admin.create_topics([topic], operation_timeout=_TIMEOUT_S).values():
        try:
            fut.result(timeout=_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DlqError(f"cannot create {name}: {exc.args[0].str()}") from exc


def _partition_counts(client: Any) -> dict[str, int]:
    md = client.list_topics(timeout=_TIMEOUT_S)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def replay(
    s: TidingsSettings,
    sel: Selection,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    out: Any = None,
) -> tuple[int, int, int]:
    """Put the selected dead letters back on their origin topics; returns (replayed, skipped, bad).

    `skipped` were replayed before; `bad` can't be replayed (no origin header, or
    the origin topic is gone). Each replayed record keeps its original key, value
    and headers (without `kafka_dlt-*`/`tidings-dlq-*`), gets
    `tidings-replay-of: dlq/<partition>/<offset>`, and goes to its original
    partition when the origin topic still has it.

    Why a DLQ record is replayed at most once, even across a crash mid-replay:

    * Each replayed record and its marker (key `<partition>:<offset>` on the
      compacted topic `<dlq>.replayed`) are produced in one Kafka transaction.
      Both become visible, or neither does: a crash before the commit aborts
      the pair (the stages read with read_committed and never see an aborted
      replay), a crash after it leaves both.
    * Before reading the markers, the producer calls `init_transactions` with a
      transactional.id derived from the DLQ topic. That fences any earlier or
      concurrent replay of the same DLQ (its next commit fails) and finishes or
      aborts its open transaction, so the markers read afterwards are every
      replay that ever committed, and no other replay can commit until this one
      is done.
    * Records whose marker exists are skipped. So a rerun after a crash redoes
      exactly the records whose transaction did not commit.

    Downstream a duplicate would still be harmless: notification ids are
    deterministic and the deliver stage's claims send each notification once
    (except for bare-JSON events replayed to route, whose event id is the
    offset they are read at: for those the markers are the only guard).
    `limit` counts records actually replayed (skipped ones don't count).
    """
    write = out or sys.stdout
    dlq = s.topics.dlq
    chosen = select(s, sel)
    if dry_run:
        done = replayed_ids(s)
        producer: Producer | None = None
        parts = _partition_counts(AdminClient(s.kafka.client_config()))
    else:
        _ensure_replayed_topic(s)
        producer = make_producer(s, transactional_id=f"tidings-dlq-replay.{dlq}")
        try:
            producer.init_transactions(_TIMEOUT_S)
        except KafkaException as exc:
            raise DlqError(f"init_transactions failed: {exc.args[0].str()}") from exc
        done = replayed_ids(s)  # only now: see the docstring
        parts = _partition_counts(producer)
    todo: list[DeadLetter] = []
    skipped = bad = 0
    for dl in chosen:
        origin = dl.origin_topic
        if dl.id in done:
            skipped += 1
            print(f"skip    {dl.id}  already replayed", file=write)
        elif origin is None or origin not in parts:
            bad += 1
            why = "no kafka_dlt-original-topic header" if origin is None else f"{origin} is gone"
            print(f"cannot  {dl.id}  {why}", file=write)
        elif limit is None or len(todo) < limit:
            todo.append(dl)
    if dry_run:
        for dl in todo:
            print(f"would   {dl.id}  -> {_where(dl, parts)}", file=write)
        return len(todo), skipped, bad
    assert producer is not None
    replayed = 0
    for i in range(0, len(todo), _BATCH):
        batch = todo[i : i + _BATCH]
        _commit_batch(producer, s, batch, parts)
        replayed += len(batch)
        for dl in batch:
            print(f"replay  {dl.id}  -> {_where(dl, parts)}", file=write)
    return replayed, skipped, bad


def _target_partition(dl: DeadLetter, parts: dict[str, int]) -> int | None:
    p = dl.origin_partition
    n = parts.get(dl.origin_topic or "", 0)
    return p if p is not None and 0 <= p < n else None


def _where(dl: DeadLetter, parts: dict[str, int]) -> str:
    p = _target_partition(dl, parts)
    return f"{dl.origin_topic}/{'?' if p is None else p}"


def _commit_batch(
    producer: Producer, s: TidingsSettings, batch: list[DeadLetter], parts: dict[str, int]
) -> None:
    marks = replayed_topic(s.topics.dlq)
    now = datetime.now(UTC)
    try:
        producer.begin_transaction()
        for dl in batch:
            kw: dict[str, Any] = {}
            p = _target_partition(dl, parts)
            if p is not None:
                kw["partition"] = p
            hdrs = replay_headers(dl.headers, dl.partition, dl.offset)
            _produce(producer, dl.origin_topic or "", dl.key, dl.value, cast(Any, hdrs), kw)
            mkey, mval = replay_marker(dl, now)
            _produce(producer, marks, mkey, mval, None, {})
        producer.commit_transaction(_TIMEOUT_S)
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
        if err.retriable() and not err.txn_requires_abort():
            # The commit's outcome is unknown but retriable: retrying the commit is safe.
            try:
                producer.commit_transaction(_TIMEOUT_S)
                return
            except KafkaException as exc2:
                err = exc2.args[0]
        if err.txn_requires_abort():
            # If this fails too, the coordinator aborts the transaction on its timeout.
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(_TIMEOUT_S)
        fenced = err.code() in _FENCED
        raise DlqError(
            f"a replay transaction of {len(batch)} record(s) failed: {err.str()}"
            + ("; another `tidings dlq replay` of this DLQ took over" if fenced else "")
            + ". Earlier batches stay replayed and this one is visible whole or not at all:"
            " run the replay again, it skips whatever was replayed"
        ) from exc


def _produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: Any,
    kw: dict[str, Any],
) -> None:  # fmt: skip
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, **kw)
            return
        except BufferError:
            producer.poll(0.05)
