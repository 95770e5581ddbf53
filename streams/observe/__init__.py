"""Observability: Prometheus metrics, health endpoints, OpenTelemetry traces, logs, lag.

The floor just above `streams.exceptions`: every other floor records into it (the metrics
are declared once, in `metric_defs`), and `streams.app` starts what a process serves.
"""

from streams.observe.consumer_stats import LagStats, lag_from_stats
from streams.observe.exceptions import ObserveError
from streams.observe.groups import (
    GroupMember,
    GroupReadError,
    GroupStatus,
    LagRow,
    lag_rows,
    read_groups,
    watermarks,
)
from streams.observe.logs import JsonFormatter, configure_logging
from streams.observe.merge import Children, merge_expositions
from streams.observe.metric_defs import (
    BREAKER_STATE,
    BREAKER_STATES,
    BUILD,
    CATALOG,
    CLAIMS_TAKEN_OVER,
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENT_TO_SENT,
    EVENTS_ROUTED,
    GC_PAUSE,
    IN_FLIGHT,
    NOTIFICATIONS,
    PAUSED_PARTITIONS,
    READY,
    RECORDS_CONSUMED,
    RECORDS_PRODUCED,
    REGISTRY,
    RETRIES_PARKED,
    SEND_DURATION,
    SENDS,
    TRANSACTIONS,
    child,
    disable,
)
from streams.observe.probes import NEEDS, DependencyProbe
from streams.observe.process import HealthSource, ProcessObserver, version
from streams.observe.server import Checks, ObserveServer
from streams.observe.tracing import (
    TRACE_HEADERS,
    Headers,
    Tracing,
    carried,
    context_of,
    span_headers,
)

__all__ = [
    "BREAKER_STATE",
    "BREAKER_STATES",
    "BUILD",
    "CATALOG",
    "CLAIMS_TAKEN_OVER",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EVENTS_ROUTED",
    "EVENT_TO_SENT",
    "GC_PAUSE",
    "IN_FLIGHT",
    "NEEDS",
    "NOTIFICATIONS",
    "PAUSED_PARTITIONS",
    "READY",
    "RECORDS_CONSUMED",
    "RECORDS_PRODUCED",
    "REGISTRY",
    "RETRIES_PARKED",
    "SENDS",
    "SEND_DURATION",
    "TRACE_HEADERS",
    "TRANSACTIONS",
    "Checks",
    "Children",
    "DependencyProbe",
    "GroupMember",
    "GroupReadError",
    "GroupStatus",
    "Headers",
    "HealthSource",
    "JsonFormatter",
    "LagRow",
    "LagStats",
    "ObserveError",
    "ObserveServer",
    "ProcessObserver",
    "Tracing",
    "carried",
    "child",
    "configure_logging",
    "context_of",
    "disable",
    "lag_from_stats",
    "lag_rows",
    "merge_expositions",
    "read_groups",
    "span_headers",
    "version",
    "watermarks",
]
