"""What stages hand to the runtime: output records, and offsets that travel with messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["TP", "Out", "RawHeaders", "norm_headers"]

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Out:
    """One record to produce; produced only in the transaction that commits its input's offset."""

    topic: str
    value: bytes | None  # None: a Kafka null value (a dead-lettered tombstone stays one)
    key: bytes | None = None
    # Sequence, not list: read-only, so a list of (str, bytes) pairs fits too.
    headers: Sequence[tuple[str, bytes | None]] = field(default_factory=list)


RawHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None


def norm_headers(headers: RawHeaders) -> list[tuple[str, bytes | None]]:
    """A message's headers as (name, bytes) pairs, whatever shape librdkafka handed over."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
