"""The pure half of `tidings dlq`: ids, dead-letter records, filters, replay headers, output lines.

No I/O here; `streams.dlq.replay` reads Kafka and calls these.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.codes import canonical
from streams.runtime.dead_letter import DLQ_HEADERS, header_map

__all__ = [
    "REPLAY_HEADER",
    "DeadLetter",
    "Selection",
    "dlq_id",
    "format_line",
    "format_show",
    "parse_id",
    "parse_since",
    "replay_headers",
    "replay_marker",
]

REPLAY_HEADER = "tidings-replay-of"
_ERROR_CHARS = 80

Headers = list[tuple[str, bytes | None]]


def parse_id(text: str) -> tuple[int, int]:
    """`partition:offset` → (partition, offset); raises ValueError saying what is expected."""
    part, sep, off = text.strip().partition(":")
    if not sep or not part.isdigit() or not off.isdigit():
        raise ValueError(
            f"dead-letter id {text!r} is not PARTITION:OFFSET (e.g. 0:42); "
            "`tidings dlq list` shows the ids"
        )
    return int(part), int(off)


def dlq_id(partition: int, offset: int) -> str:
    """The id `tidings dlq` prints and accepts for the DLQ record at partition/offset."""
    return f"{partition}:{offset}"


def parse_since(text: str) -> datetime:
    """An ISO 8601 time (a bare date means midnight); naive times are UTC. Raises ValueError."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is not an ISO 8601 time, e.g. 2026-05-01 or 2026-05-01T12:00:00Z"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the DLQ topic, with its `kafka_dlt-*`/`tidings-dlq-*` headers parsed."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)

    @property
    def id(self) -> str:
        return dlq_id(self.partition, self.offset)

    @property
    def meta(self) -> dict[str, str]:
        """Headers as str→str, last value wins."""
        return header_map(self.headers)

    @property
    def origin_topic(self) -> str | None:
        return self.meta.get("kafka_dlt-original-topic") or None

    @property
    def origin_partition(self) -> int | None:
        return _int(self.meta.get("kafka_dlt-original-partition"))

    @property
    def origin_offset(self) -> int | None:
        return _int(self.meta.get("kafka_dlt-original-offset"))

    @property
    def stage(self) -> str:
        return self.meta.get("tidings-dlq-stage", "")

    @property
    def reason(self) -> str:
        return self.meta.get("tidings-dlq-reason", "")

    @property
    def error(self) -> str:
        return self.meta.get("kafka_dlt-exception-message", "")

    @property
    def time(self) -> datetime:
        """When the record was dead-lettered (the DLQ record's Kafka timestamp), UTC."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on: every given criterion must hold.

    Within one criterion any value may match (`--reason a --reason b` is a or b).
    Topics are glob patterns (`test.*.dispatch.email`); Kafka topic names can't
    contain `*?[`, so a plain name matches only itself.
    """

    reasons: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    since: datetime | None = None
    ids: frozenset[tuple[int, int]] = frozenset()

    def matches(self, dl: DeadLetter) -> bool:
        """Whether `dl` is selected; pure."""
        if self.ids and (dl.partition, dl.offset) not in self.ids:
            return False
        # One spelling, old dead letters and old habits included: no-provider = no_provider.
        if self.reasons and canonical(dl.reason) not in {canonical(r) for r in self.reasons}:
            return False
        if self.stages and dl.stage not in self.stages:
            return False
        if self.topics:
            origin = dl.origin_topic
            if origin is None or not any(fnmatch.fnmatchcase(origin, t) for t in self.topics):
                return False
        return self.since is None or dl.time >= self.since


def replay_headers(
    headers: Sequence[tuple[str, bytes | None]], partition: int, offset: int
) -> Headers:
    """The original headers (DLQ and earlier replay headers dropped) + `tidings-replay-of`.

    Order and repeated names are kept. A record that was replayed, failed again
    and came back to the DLQ carries the old `tidings-replay-of`; it is replaced
    by the new one, which names the DLQ record this replay comes from.
    """
    kept: Headers = [
        (k, v)
        for k, v in headers
        if k not in DLQ_HEADERS
        and not k.startswith(("kafka_dlt-", "tidings-dlq-"))
        and k != REPLAY_HEADER
    ]
    kept.append((REPLAY_HEADER, f"dlq/{partition}/{offset}".encode()))
    return kept


def replay_marker(dl: DeadLetter, replayed_at: datetime) -> tuple[bytes, bytes]:
    """Key and value of the `<dlq>.replayed` record saying `dl` was replayed."""
    value = {
        "dlq_id": dl.id,
        "origin_topic": dl.origin_topic,
        "origin_partition": dl.origin_partition,
        "origin_offset": dl.origin_offset,
        "reason": dl.reason,
        "dead_lettered_at_ms": dl.timestamp_ms,
        "replayed_at": replayed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return dl.id.encode(), json.dumps(value, sort_keys=True).encode()


def _one_line(text: str, n: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def format_line(dl: DeadLetter) -> str:
    """One `tidings dlq list` line: id, time, stage, reason, origin, first 80 chars of the error."""
    origin = f"{dl.origin_topic or '?'}/{_or_q(dl.origin_partition)}/{_or_q(dl.origin_offset)}"
    return "  ".join(
        [
            f"{dl.id:<9}",
            _iso(dl.time),
            f"{dl.stage or '?':<7}",
            f"{dl.reason or '?':<20}",
            origin,
            _one_line(dl.error, _ERROR_CHARS),
        ]
    )


def _or_q(n: int | None) -> str:
    return "?" if n is None else str(n)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def format_show(dl: DeadLetter, dlq_topic: str) -> str:
    """`tidings dlq show`: where it is, headers (DLQ ones first), then the value (JSON pretty)."""
    lines = [
        f"id:        {dl.id}  ({dlq_topic} partition {dl.partition} offset {dl.offset})",
        f"time:      {_iso(dl.time)}",
        f"key:       {'(none)' if dl.key is None else _text(dl.key)}",
        "headers:",
    ]
    ordered = sorted(dl.headers, key=lambda kv: 0 if kv[0] in DLQ_HEADERS else 1)
    width = max((len(k) for k, _ in ordered), default=0)
    for k, v in ordered:
        shown = "(null)" if v is None else _text(v)
        lines.append(f"  {k:<{width}}  {shown}")
    if dl.value is None:
        lines.append("value: null (a tombstone)")
        return "\n".join(lines)
    value = dl.value
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):  # not JSON or not UTF-8; or nested too deep to show
        lines.append(f"value ({len(value)} bytes, not JSON):")
        lines.append(_text(value))
    else:
        pretty = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False)
        lines.append(f"value ({len(value)} bytes, JSON):")
        # A lone surrogate (\ud800) can't be printed as UTF-8: show it escaped.
        lines.append(pretty.encode("utf-8", "backslashreplace").decode("utf-8"))
    return "\n".join(lines)
