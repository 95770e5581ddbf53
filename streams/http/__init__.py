"""Every HTTP surface: the provider status callbacks (pure half, app, producer), the one-click
unsubscribe, the body limit both HTTP stages share, and the gateway (streams/http/gateway)."""

from __future__ import annotations

from streams.http.body_limit import BodyLimit, Refusal
from streams.http.callbacks import (
    STAGE,
    TWILIO_ROUTE,
    callback_url,
    callback_url_problems,
    notification_ref,
    redact,
    signed_url,
    twilio_event,
    twilio_providers,
)
from streams.http.callbacks_app import (
    MAX_BODY_BYTES,
    CallbackHandlers,
    answer,
    form_fields,
    raw_target,
)
from streams.http.callbacks_producer import ACK_TIMEOUT_S, AckProducer, NotAcknowledgedError
from streams.http.unsubscribe import (
    UnsubscribeHandlers,
    opted_out,
    unsubscribe_change,
    unsubscribed_event,
)

__all__ = [
    "ACK_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "STAGE",
    "TWILIO_ROUTE",
    "AckProducer",
    "BodyLimit",
    "CallbackHandlers",
    "NotAcknowledgedError",
    "Refusal",
    "UnsubscribeHandlers",
    "answer",
    "callback_url",
    "callback_url_problems",
    "form_fields",
    "notification_ref",
    "opted_out",
    "raw_target",
    "redact",
    "signed_url",
    "twilio_event",
    "twilio_providers",
    "unsubscribe_change",
    "unsubscribed_event",
]
