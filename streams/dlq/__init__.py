"""The operator side of the dead-letter topic: reading, selecting, replaying."""

from __future__ import annotations

from streams.dlq.replay import (
    DlqError,
    read_one,
    read_records,
    replay,
    replayed_ids,
    replayed_topic,
    select,
)
from streams.dlq.select import (
    REPLAY_HEADER,
    DeadLetter,
    Selection,
    dlq_id,
    format_line,
    format_show,
    parse_id,
    parse_since,
    replay_headers,
    replay_marker,
)

__all__ = [
    "REPLAY_HEADER",
    "DeadLetter",
    "DlqError",
    "Selection",
    "dlq_id",
    "format_line",
    "format_show",
    "parse_id",
    "parse_since",
    "read_one",
    "read_records",
    "replay",
    "replay_headers",
    "replay_marker",
    "replayed_ids",
    "replayed_topic",
    "select",
]
