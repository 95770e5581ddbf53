"""Dead-letter records: the original bytes plus headers naming the origin and the error.

Header names follow Spring Kafka's `kafka_dlt-*` convention so existing tools
can read them; `tidings-*` headers add the stage and a stable reason code.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import codes
from streams.runtime.records import Out

__all__ = [
    "DLQ_HEADERS",
    "DLQ_MAX_MESSAGE_BYTES",
    "INTERNAL_ERROR",
    "OUTPUT_REFUSED",
    "dead_letter",
    "header_map",
    "reason_for",
    "refused_output",
]

DLQ_HEADERS = (
    "kafka_dlt-original-topic",
    "kafka_dlt-original-partition",
    "kafka_dlt-original-offset",
    "kafka_dlt-original-timestamp",
    "kafka_dlt-exception-fqcn",
    "kafka_dlt-exception-message",
    "tidings-dlq-stage",
    "tidings-dlq-reason",
)

_MAX_MESSAGE = 4000

# The DLQ keeps any record byte for byte plus origin and error headers: it must take more
# than the broker's default 1 MiB (message.max.bytes 1048588) that an input can have.
DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Room left in a DLQ record for the headers that name the origin and the error.
_HEADROOM = 64 * 1024

# The reason of an output the broker refused for good (too large for its topic, invalid
# for a compacted topic): it is parked here instead of failing its batch for ever.
OUTPUT_REFUSED = codes.OUTPUT_REFUSED

# The reason of a record whose handling raised something unforeseen (a tidings bug, or a
# shape nothing refused earlier); kafka_dlt-exception-fqcn says what it was.
INTERNAL_ERROR = codes.INTERNAL_ERROR


def reason_for(exc: BaseException, expected: type[BaseException], reason: str) -> str:
    """The DLQ reason: `reason` if `exc` is the expected kind of bad input, else internal_error."""
    return reason if isinstance(exc, expected) else INTERNAL_ERROR


def dead_letter(
    dlq_topic: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    error: BaseException,
    stage: str,
    reason: str,
) -> Out:
    """The DLQ record for one failed input; pure, never raises.

    The input's key, value and headers are kept exactly: a null value (tombstone) stays
    null, a None-valued or binary header stays as it was, in order. Only earlier
    `kafka_dlt-*` / `tidings-dlq-*` headers are replaced, so a replayed record that
    fails again names its latest failure.
    """
    cls = type(error)
    kept = [(k, v) for k, v in headers or () if not k.startswith(("kafka_dlt-", "tidings-dlq-"))]
    hdrs: list[tuple[str, bytes | None]] = [
        *kept,
        ("kafka_dlt-original-topic", topic.encode()),
        ("kafka_dlt-original-partition", str(partition).encode()),
        ("kafka_dlt-original-offset", str(offset).encode()),
        ("kafka_dlt-original-timestamp", str(timestamp_ms or 0).encode()),
        ("kafka_dlt-exception-fqcn", f"{cls.__module__}.{cls.__qualname__}".encode()),
        ("kafka_dlt-exception-message", str(error)[:_MAX_MESSAGE].encode("utf-8", "replace")),
        ("tidings-dlq-stage", stage.encode()),
        ("tidings-dlq-reason", reason.encode()),
    ]
    return Out(topic=dlq_topic, key=key, value=value, headers=hdrs)


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as a str→str dict (last value wins), for reading DLQ records."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or ()}


def refused_output(dlq_topic: str, out: Out, error: str, stage: str) -> Out:
    """The DLQ record standing in for an output the broker refused for good; pure.

    Its origin is the topic the output was meant for (partition -1: replay lets the
    partitioner choose), so `tidings dlq replay --reason output_refused` delivers it once
    the topic takes it. An output too large even for the DLQ keeps its key and headers,
    and its value is dropped (the error message says so and how large it was).
    """
    value = out.value
    size = len(value or b"") + sum(len(k) + len(v or b"") for k, v in out.headers)
    if size > DLQ_MAX_MESSAGE_BYTES - _HEADROOM:
        error = f"{error}; the value ({size} bytes) was too large for the DLQ and is not kept"
        value = None
    return dead_letter(
        dlq_topic, topic=out.topic, partition=-1, offset=-1, timestamp_ms=None, key=out.key,
        value=value, headers=out.headers, error=RecordRefused(error), stage=stage,
        reason=OUTPUT_REFUSED,
    )  # fmt: skip


class RecordRefused(Exception):
    """The broker refused one output record for good (kafka_dlt-exception-fqcn names this)."""
