"""Every Prometheus metric tidings exports, declared once, with its help text.

The model is arroyo's `utils/metric_defs.py`: one module names every series, so the
dashboard (deploy/grafana/tidings.json), the alert rules (deploy/prometheus/alerts.yaml)
and docs/operations.md have one place to agree with. Naming follows Prometheus: base units
(`_seconds`), `_total` on counters, and labels of bounded cardinality only (stage, topic,
partition, channel, provider, status, outcome, reason, tier, GC generation: never a
recipient, an event id or a notification id).

The metrics live in `REGISTRY`, one per process: `tidings run` with several stages as
threads serves them all at one `/metrics`; a supervisor of several processes merges its
children's (streams/observe/server.py). Recording is a lock and an add (~1 µs), and the
stages record per batch, not per record, where they can.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
    "NOTIFICATIONS",
    "PAUSED_PARTITIONS",
    "READY",
    "RECORDS_CONSUMED",
    "RECORDS_PRODUCED",
    "REGISTRY",
    "RETRIES_PARKED",
    "SENDS",
    "SEND_DURATION",
    "TRANSACTIONS",
    "child",
    "disable",
]

REGISTRY = CollectorRegistry(auto_describe=True)

# Provider calls: a local sink answers in ~0.5 ms, a remote API in 50-500 ms, a timeout at 30 s.
_SEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Event produced → notification sent: tens of ms on a quiet pipeline; minutes in a retry tier.
_E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

RECORDS_CONSUMED = Counter(
    "tidings_records_consumed_total",
    "Records a stage took from a topic (each counted once per processing, so a batch redone "
    "after an aborted transaction counts again).",
    ["stage", "topic"],
    registry=REGISTRY,
)
RECORDS_PRODUCED = Counter(
    "tidings_records_produced_total",
    "Records a stage produced to a topic and the broker acknowledged (committed, for the "
    "transactional stages).",
    ["stage", "topic"],
    registry=REGISTRY,
)
EVENTS_ROUTED = Counter(
    "tidings_events_routed_total",
    "Domain events the route stage decided, by outcome: matched (at least one notification), "
    "unmatched (no rule matched, or its type is skipped), dead_lettered.",
    ["outcome"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "tidings_notifications_total",
    "Status events produced, by channel and status (queued, sent, delivered, failed, "
    "suppressed, unknown, read, ...).",
    ["channel", "status"],
    registry=REGISTRY,
)
SENDS = Counter(
    "tidings_sends_total",
    "Provider calls, by channel, provider and outcome: sent (accepted), retry (parked for a "
    "later attempt), failed (given up), skipped (not sent: a duplicate or an ambiguous "
    "takeover under the skip policy).",
    ["channel", "provider", "outcome"],
    registry=REGISTRY,
)
SEND_DURATION = Histogram(
    "tidings_send_duration_seconds",
    "How long one provider call took, from the request to the provider's answer.",
    ["channel", "provider"],
    buckets=_SEND_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "tidings_gc_pause_seconds",
    "How long one garbage collection held the process (every thread), by generation: 2 is a "
    "full collection (streams/runtime/heap.py).",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
EVENT_TO_SENT = Histogram(
    "tidings_event_to_sent_seconds",
    "From the domain event's produce timestamp to its notification's accepted send.",
    ["channel"],
    buckets=_E2E_BUCKETS,
    registry=REGISTRY,
)
RETRIES_PARKED = Counter(
    "tidings_retries_parked_total",
    "Notifications parked on a retry topic for a later attempt, by channel and delay tier.",
    ["channel", "tier"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "tidings_dead_letters_total",
    "Records written to the dead-letter topic, by the stage that wrote them and the reason.",
    ["stage", "reason"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "tidings_breaker_state",
    "Each provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
    ["provider"],
    registry=REGISTRY,
)
# The value of each breaker state in BREAKER_STATE.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
CLAIMS_TAKEN_OVER = Counter(
    "tidings_claims_taken_over_total",
    "Send claims this process took over from a member that died or stalled mid-send.",
    ["channel"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "tidings_in_flight_records",
    "Records taken from Kafka whose offsets are not committed yet.",
    ["stage"],
    registry=REGISTRY,
)
PAUSED_PARTITIONS = Gauge(
    "tidings_paused_partitions",
    "Partitions a stage has paused for back-pressure.",
    ["stage"],
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "tidings_transactions_total",
    "Kafka transactions ended, by stage and outcome: commit or abort.",
    ["stage", "outcome"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "tidings_consumer_lag",
    "Records between a partition's high watermark and this member's position in it "
    "(librdkafka statistics), for the partitions this member owns.",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
READY = Gauge(
    "tidings_ready",
    "1 while a stage has its dependencies (Kafka, Postgres, Redis as it needs them), "
    "0 while it waits for one.",
    ["stage"],
    registry=REGISTRY,
)
CATALOG = Info(
    "tidings_catalog",
    "The catalog version this process routes and renders with.",
    registry=REGISTRY,
)
BUILD = Info("tidings_build", "The tidings version of this process.", registry=REGISTRY)


class _NoOp:
    """What a disabled metric hands out: every recording call does nothing."""

    def labels(self, *args: object, **kwargs: object) -> _NoOp:
        return self

    def __getattr__(self, name: str) -> object:
        return self._nothing

    def _nothing(self, *args: object, **kwargs: object) -> None:
        return None


_NOOP = _NoOp()


@functools.lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: for the per-send paths, where `labels()`
    (validation, a lock, a dict) cost more than the `inc`/`observe` itself. Labels are
    bounded sets (the module docstring), so is this cache."""
    return metric.labels(*labels)


def disable() -> None:
    """Make every metric of this module record nothing (`observe.metrics: false`).

    Only to measure what recording costs (`make bench`): the objects stay the same, so
    every module that imported them by name is switched off too. Irreversible.
    """
    child.cache_clear()  # children made before this would go on recording
    for obj in list(globals().values()):
        if isinstance(obj, Counter | Gauge | Histogram | Info):
            for name in ("labels", "inc", "set", "observe", "info", "set_function", "remove"):
                setattr(obj, name, getattr(_NOOP, name) if name != "labels" else _NOOP.labels)
