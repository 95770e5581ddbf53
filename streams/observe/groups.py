"""The Kafka side of `tidings status`: consumer groups, their members, committed offsets, lag.

Read-only: one AdminClient per call, no group join, no commits. Every request is bounded by
`timeout_s`; librdkafka errors come back as `GroupReadError` (`raise … from`). `lag_rows` is
the pure half (offsets → lag), unit-tested without a broker.

This module sits below `streams.runtime`: it imports only from `schemas`, `streams.exceptions`,
confluent_kafka and the standard library.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Public as confluent_kafka.admin.OffsetSpec, but re-exported implicitly there (mypy --strict
# refuses that), so imported from where it is defined, as streams/runtime/kafka.py does.
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import TopicPartition

from schemas.settings import TidingsSettings
from streams.observe.exceptions import ObserveError

__all__ = [
    "GroupMember",
    "GroupReadError",
    "GroupStatus",
    "LagRow",
    "lag_rows",
    "read_groups",
    "watermarks",
]

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection refused, …) go here instead of straight to stderr:
# a command that reports "Kafka is unreachable" in one line shouldn't print thirty more.
# The NullHandler keeps them quiet unless the application configured logging.
_rdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
_rdkafka_log.addHandler(logging.NullHandler())

TP = tuple[str, int]  # (topic, partition)

# The group coordinator is moving or still loading its state (a broker just restarted):
# asked again shortly, it answers.
_AGAIN = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
_RETRY_PAUSE_S = 0.25


class GroupReadError(ObserveError):
    """Kafka could not be read for `tidings status` (unreachable, timed out, not authorised).

    The message names what was being read, librdkafka's reason and what to check.
    """


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One live member of a consumer group, as the group coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None  # group.instance.id of a static member (KIP-345)
    partitions: tuple[TP, ...]  # assigned, sorted


@dataclass(frozen=True, slots=True)
class LagRow:
    """One input partition of a group: how far its committed offset is behind the end.

    `committed` is None when the group never committed an offset for the partition.
    `lag` = `high` - `committed`; with no committed offset (or one below `low`, whose
    records retention deleted) the group would start at `low`, so `lag` = `high` - `low`.
    Never negative. `owner` is the member_id of the member it is assigned to, if any.
    """

    topic: str
    partition: int
    committed: int | None
    low: int
    high: int
    lag: int
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group and the lag on each partition of its input topics.

    `state` is the coordinator's state in lower case (`stable`, `empty`, `dead`,
    `preparing_rebalancing`, `completing_rebalancing`, `unknown`); a group Kafka has never
    heard of is `dead`. `missing_topics` are input topics that don't exist (no rows).
    """

    group: str
    topics: tuple[str, ...]
    state: str
    members: tuple[GroupMember, ...]
    rows: tuple[LagRow, ...]
    missing_topics: tuple[str, ...] = ()

    @property
    def lag(self) -> int:
        """The total lag over every input partition."""
        return sum(r.lag for r in self.rows)

    @property
    def assigned(self) -> int:
        """How many partitions the members hold (any topic)."""
        return sum(len(m.partitions) for m in self.members)


# ---------------------------------------------------------------- pure


def lag_rows(
    partitions: Iterable[TP],
    committed: Mapping[TP, int | None],
    marks: Mapping[TP, tuple[int, int]],
    owners: Mapping[TP, str] | None = None,
) -> tuple[LagRow, ...]:
    """One LagRow per partition in `partitions` that has watermarks, sorted; pure.

    `committed` maps a partition to its committed offset (None or absent: none committed);
    `marks` to its (low, high) watermarks; `owners` to the member_id holding it.
    """
    rows: list[LagRow] = []
    for tp in sorted(set(partitions)):
        if tp not in marks:
            continue
        low, high = marks[tp]
        c = committed.get(tp)
        start = low if c is None else max(c, low)
        rows.append(
            LagRow(
                topic=tp[0],
                partition=tp[1],
                committed=c,
                low=low,
                high=high,
                lag=max(0, high - start),
                owner=(owners or {}).get(tp),
            )
        )
    return tuple(rows)


# ---------------------------------------------------------------- Kafka


def read_groups(
    settings: TidingsSettings, inputs: Mapping[str, Sequence[str]], *, timeout_s: float = 10.0
) -> list[GroupStatus]:
    """Describe each group of `inputs` (group → its input topics) with the lag on its inputs.

    Blocks: one metadata request (bounded by `timeout_s`), then the group descriptions,
    committed offsets and watermarks together, all bounded by one more `timeout_s`
    (a coordinator that is still loading is asked again within that bound). So at most
    about twice `timeout_s`. Raises GroupReadError when Kafka is unreachable, doesn't answer
    in time or refuses a request (e.g. not authorised); never returns partial results.
    """
    if not inputs:
        return []
    admin = _admin(settings)
    parts, missing = _partitions(settings, admin, {t for ts in inputs.values() for t in ts},
                                 timeout_s)  # fmt: skip
    deadline = time.monotonic() + timeout_s
    groups = list(inputs)
    described = _describe(admin, groups, deadline)
    committed = {
        g: _committed(admin, g, [tp for t in inputs[g] for tp in parts.get(t, ())], deadline)
        for g in groups
    }
    marks = _watermarks(admin, [tp for tps in parts.values() for tp in tps], deadline)
    out: list[GroupStatus] = []
    for g in groups:
        state, members = described[g]
        owners = {tp: m.member_id for m in members for tp in m.partitions}
        mine = [tp for t in inputs[g] for tp in parts.get(t, ())]
        out.append(
            GroupStatus(
                group=g,
                topics=tuple(inputs[g]),
                state=state,
                members=members,
                rows=lag_rows(mine, committed[g], marks, owners),
                missing_topics=tuple(t for t in inputs[g] if t in missing),
            )
        )
    return out


def watermarks(
    settings: TidingsSettings, topics: Iterable[str], *, timeout_s: float = 10.0
) -> dict[TP, tuple[int, int]]:
    """(low, high) watermarks of every partition of `topics`; missing topics have none.

    Blocks up to about twice `timeout_s`; raises GroupReadError like `read_groups`.
    """
    admin = _admin(settings)
    parts, _ = _partitions(settings, admin, set(topics), timeout_s)
    deadline = time.monotonic() + timeout_s
    return _watermarks(admin, [tp for tps in parts.values() for tp in tps], deadline)


def _admin(settings: TidingsSettings) -> AdminClient:
    conf: dict[str, Any] = {**settings.kafka.client_config(), "logger": _rdkafka_log}
    return AdminClient(conf)


def _why(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return str(err.str())
    if isinstance(exc, FutureTimeout):
        return "no answer in time"
    return repr(exc)


def _code(exc: BaseException) -> int | None:
    err = exc.args[0] if exc.args else None
    return int(err.code()) if isinstance(err, KafkaError) else None


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _partitions(
    settings: TidingsSettings, admin: AdminClient, topics: set[str], timeout_s: float
) -> tuple[dict[str, list[TP]], set[str]]:
    """Partitions of each existing topic in `topics`, and the names of the missing ones."""
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise GroupReadError(
            f"Kafka at {settings.kafka.bootstrap_servers} did not answer within {timeout_s:g} s "
            f"({_why(exc)}): is it running (`tidings doctor --service kafka`), and are "
            "kafka.bootstrap_servers (TIDINGS_KAFKA__BOOTSTRAP_SERVERS) and its security "
            "settings right?"
        ) from exc
    parts: dict[str, list[TP]] = {}
    missing: set[str] = set()
    for t in sorted(topics):
        tmd = md.topics.get(t)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            missing.add(t)
        else:
            parts[t] = [(t, p) for p in sorted(tmd.partitions)]
    return parts, missing


def _result(fut: Future[Any], what: str, deadline: float) -> Any:
    try:
        return fut.result(timeout=_left(deadline) + 1.0)
    except (KafkaException, FutureTimeout) as exc:
        raise GroupReadError(f"cannot read {what}: {_why(exc)}") from exc


def _describe(
    admin: AdminClient, groups: list[str], deadline: float
) -> dict[str, tuple[str, tuple[GroupMember, ...]]]:
    out: dict[str, tuple[str, tuple[GroupMember, ...]]] = {}
    todo = list(groups)
    while todo:
        futures = admin.describe_consumer_groups(todo, request_timeout=_left(deadline))
        again: list[str] = []
        for g, fut in futures.items():
            try:
                d = fut.result(timeout=_left(deadline) + 1.0)
            except (KafkaException, FutureTimeout) as exc:
                code = _code(exc)
                if code == KafkaError.GROUP_ID_NOT_FOUND:
                    out[g] = ("dead", ())
                    continue
                if code in _AGAIN and time.monotonic() < deadline:
                    again.append(g)
                    continue
                raise GroupReadError(
                    f"cannot describe consumer group {g}: {_why(exc)}"
                    + (
                        "; the principal needs DESCRIBE on the group"
                        if code == KafkaError.GROUP_AUTHORIZATION_FAILED
                        else ""
                    )
                ) from exc
            out[g] = (_state(d), tuple(sorted(_members(d), key=lambda m: m.member_id)))
        todo = again
        if todo:
            time.sleep(_RETRY_PAUSE_S)
    return out


def _state(d: Any) -> str:
    state = getattr(d, "state", None)
    name = getattr(state, "name", None)
    if name == "UNKOWN":  # confluent-kafka's deprecated alias of UNKNOWN
        name = "UNKNOWN"
    return str(name).lower() if name else "unknown"


def _members(d: Any) -> list[GroupMember]:
    out = []
    for m in d.members or ():
        tps = m.assignment.topic_partitions if m.assignment is not None else []
        out.append(
            GroupMember(
                member_id=str(m.member_id),
                client_id=str(m.client_id),
                host=str(m.host),
                instance_id=m.group_instance_id or None,
                partitions=tuple(sorted((str(tp.topic), int(tp.partition)) for tp in tps)),
            )
        )
    return out


def _committed(
    admin: AdminClient, group: str, tps: list[TP], deadline: float
) -> dict[TP, int | None]:
    if not tps:
        return {}
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])]
    while True:
        fut = admin.list_consumer_group_offsets(request, request_timeout=_left(deadline))[group]
        try:
            res = fut.result(timeout=_left(deadline) + 1.0)
            break
        except (KafkaException, FutureTimeout) as exc:
            if _code(exc) in _AGAIN and time.monotonic() < deadline:
                time.sleep(_RETRY_PAUSE_S)
                continue
            raise GroupReadError(
                f"cannot read the committed offsets of consumer group {group}: {_why(exc)}"
            ) from exc
    out: dict[TP, int | None] = {}
    for tp in res.topic_partitions or ():
        if tp.error is not None:
            raise GroupReadError(
                f"cannot read the committed offset of {group} on {tp.topic}/{tp.partition}: "
                f"{tp.error.str()}"
            )
        # librdkafka's OFFSET_INVALID (-1001): nothing committed.
        out[(str(tp.topic), int(tp.partition))] = int(tp.offset) if tp.offset >= 0 else None
    return out


def _watermarks(admin: AdminClient, tps: list[TP], deadline: float) -> dict[TP, tuple[int, int]]:
    if not tps:
        return {}
    specs = {
        "low": OffsetSpec.earliest(),  # type: ignore[no-untyped-call]  # untyped upstream
        "high": OffsetSpec.latest(),  # type: ignore[no-untyped-call]
    }
    asked = {
        name: admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in tps}, request_timeout=_left(deadline)
        )
        for name, spec in specs.items()
    }
    got: dict[str, dict[TP, int]] = {"low": {}, "high": {}}
    for name, futures in asked.items():
        for tp, fut in futures.items():
            what = f"the {name} watermark of {tp.topic}/{tp.partition}"
            got[name][(str(tp.topic), int(tp.partition))] = int(_result(fut, what, deadline).offset)
    return {tp: (got["low"][tp], got["high"][tp]) for tp in tps}
