"""One module per consumer-group stage: route, deliver (with its worker and outputs),
audit, and the provider callbacks stage.
"""

from __future__ import annotations

from streams.stages.audit import AUDIT_COLUMNS, AuditStage, audit_record, audit_row
from streams.stages.callbacks import CallbacksStage
from streams.stages.deliver import DeliverStage
from streams.stages.deliver_observe import (
    failed_provider,
    provider_span,
    trace_headers,
    traced,
    watch_breakers,
    where,
)
from streams.stages.deliver_outputs import DUE_HEADER, Item, Outputs
from streams.stages.deliver_worker import Completion, DeliverWorker
from streams.stages.route import RouteStage, UnknownEventType, route_record

__all__ = [
    "AUDIT_COLUMNS",
    "DUE_HEADER",
    "AuditStage",
    "CallbacksStage",
    "Completion",
    "DeliverStage",
    "DeliverWorker",
    "Item",
    "Outputs",
    "RouteStage",
    "UnknownEventType",
    "audit_record",
    "audit_row",
    "failed_provider",
    "provider_span",
    "route_record",
    "trace_headers",
    "traced",
    "watch_breakers",
    "where",
]
