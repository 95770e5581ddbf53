"""One module per consumer-group stage: route, deliver (with its worker and outputs),
audit, recipients (the directory's materialiser), the provider callbacks stage, and the
gateway (the REST API).
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
from streams.stages.deliver_outputs import (
    DUE_HEADER,
    HOLD_HEADER,
    Item,
    Outputs,
    hold_until_ms,
    park,
    suppressed_status,
)
from streams.stages.deliver_recheck import ADDRESS_CHANGED, PreferenceRecheck, recheck
from streams.stages.deliver_worker import Completion, DeliverWorker
from streams.stages.gateway import GatewayStage
from streams.stages.http_stage import HttpStage
from streams.stages.recipients import RecipientsStage, decode_change
from streams.stages.resolve import (
    NO_ADDRESS,
    Resolution,
    profile_of,
    resolve,
)
from streams.stages.route import RouteStage, UnknownEventType, route_record
from streams.stages.route_caps import Made, apply_caps, cap_requests, capped_group
from streams.stages.route_decide import (
    DirectoryView,
    Outcome,
    Planned,
    TenantPrefs,
    finish_record,
    plan_record,
)

__all__ = [
    "ADDRESS_CHANGED",
    "AUDIT_COLUMNS",
    "DUE_HEADER",
    "HOLD_HEADER",
    "NO_ADDRESS",
    "AuditStage",
    "CallbacksStage",
    "Completion",
    "DeliverStage",
    "DeliverWorker",
    "DirectoryView",
    "GatewayStage",
    "HttpStage",
    "Item",
    "Made",
    "Outcome",
    "Outputs",
    "Planned",
    "PreferenceRecheck",
    "RecipientsStage",
    "Resolution",
    "RouteStage",
    "TenantPrefs",
    "UnknownEventType",
    "apply_caps",
    "audit_record",
    "audit_row",
    "cap_requests",
    "capped_group",
    "decode_change",
    "failed_provider",
    "finish_record",
    "hold_until_ms",
    "park",
    "plan_record",
    "profile_of",
    "provider_span",
    "recheck",
    "resolve",
    "route_record",
    "suppressed_status",
    "trace_headers",
    "traced",
    "watch_breakers",
    "where",
]
