"""Count what a stage produced, by topic and by what the records say, once they are committed.

One pass over a committed batch's outputs, reading only the topic and the headers (no
payload is parsed): records per topic, status events per channel and status (`ce_type` and
`tidings-channel`), dead letters per reason (`tidings-dlq-reason`), retries per tier. The
Prometheus series are declared in streams/observe/metric_defs.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.settings import TopicSettings
from streams.observe.metric_defs import (
    DEAD_LETTERS,
    NOTIFICATIONS,
    RECORDS_PRODUCED,
    RETRIES_PARKED,
)
from streams.runtime.records import Out

__all__ = ["CHANNEL_HEADER", "OutputCounter"]

# On status events and retry records: the notification's channel, so consumers (and this
# counter) can filter without parsing the value.
CHANNEL_HEADER = "tidings-channel"
_STATUS_TYPE = "notification."


def _header(o: Out, name: str) -> str:
    for k, v in o.headers:
        if k == name:
            return v.decode(errors="replace") if v is not None else ""
    return ""


class OutputCounter:
    """`produced(outs)` after the broker confirmed `outs`; thread-safe, no I/O."""

    def __init__(self, stage: str, topics: TopicSettings) -> None:
        self._stage = stage
        self._status = topics.status
        self._dlq = topics.dlq
        self._retry = topics.retry_prefix

    def produced(self, outs: Sequence[Out]) -> None:
        """Count `outs` (records the broker acknowledged) into the metrics."""
        if not outs:
            return
        per_topic: dict[str, int] = {}
        statuses: dict[tuple[str, str], int] = {}
        dead: dict[str, int] = {}
        retries: dict[tuple[str, str], int] = {}
        for o in outs:
            t = o.topic
            per_topic[t] = per_topic.get(t, 0) + 1
            if t == self._status:
                ce_type = _header(o, "ce_type")
                key = (_header(o, CHANNEL_HEADER) or "unknown", ce_type[len(_STATUS_TYPE) :])
                statuses[key] = statuses.get(key, 0) + 1
            elif t == self._dlq:
                reason = _header(o, "tidings-dlq-reason") or "unknown"
                dead[reason] = dead.get(reason, 0) + 1
            elif t.startswith(self._retry):
                key = (_header(o, CHANNEL_HEADER) or "unknown", t[len(self._retry) :])
                retries[key] = retries.get(key, 0) + 1
        for t, n in per_topic.items():
            RECORDS_PRODUCED.labels(self._stage, t).inc(n)
        for (channel, status), n in statuses.items():
            NOTIFICATIONS.labels(channel, status).inc(n)
        for reason, n in dead.items():
            DEAD_LETTERS.labels(self._stage, reason).inc(n)
        for (channel, tier), n in retries.items():
            RETRIES_PARKED.labels(channel, tier).inc(n)
