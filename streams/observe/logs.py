"""Log lines as text for a terminal or as JSON for a collector (`log.format`).

`configure_logging(fmt, level, label)` is called once by the CLI. JSON lines carry the time,
level, logger, message, the thread (a stage's threads are named after it), the process's
`label` (e.g. `deliver#1`), the current trace and span ids when a span is active, and any
of `stage`, `topic`, `partition`, `offset`, `notification_id` a call passes in `extra=`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "configure_logging"]

_EXTRA = ("stage", "topic", "partition", "offset", "notification_id", "event_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises on an odd value (it is stringified)."""

    def __init__(self, label: str = "") -> None:
        super().__init__()
        self._label = label

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if self._label:
            doc["process"] = self._label
        for k in _EXTRA:
            v = record.__dict__.get(k)
            if v is not None:
                doc[k] = v
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(fmt: str, level: str, label: str = "") -> None:
    """Set up the root logger once: `fmt` text|json, `level` a logging level name."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(label.strip()))
    else:
        line = f"%(asctime)s %(levelname)s {label}%(threadName)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(line))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
