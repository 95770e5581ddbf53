"""Dead-letter records: the original bytes plus headers naming the origin and the error.

Header names follow Spring Kafka's `kafka_dlt-*` convention so existing tools
can read them; `tidings-*` headers add the stage and a stable reason code.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.records import Out

__all__ = ["DLQ_HEADERS", "dead_letter", "header_map"]

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
    """The DLQ record for one failed input; pure, never raises."""
    cls = type(error)
    kept = [(k, v) for k, v in headers or () if v is not None and not k.startswith("kafka_dlt-")]
    kept = [(k, v) for k, v in kept if not k.startswith("tidings-dlq-")]
    hdrs = [
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
    return Out(topic=dlq_topic, key=key, value=value or b"", headers=hdrs)


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as a str→str dict (last value wins), for reading DLQ records."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or ()}
