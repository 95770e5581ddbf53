"""Every HTTP surface: today the provider status callbacks (pure half, app, producer) and
the one-click unsubscribe."""

from __future__ import annotations

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
from streams.http.callbacks_app import MAX_BODY_BYTES, CallbackHandlers, answer
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
    "CallbackHandlers",
    "NotAcknowledgedError",
    "UnsubscribeHandlers",
    "answer",
    "callback_url",
    "callback_url_problems",
    "notification_ref",
    "opted_out",
    "redact",
    "signed_url",
    "twilio_event",
    "twilio_providers",
    "unsubscribe_change",
    "unsubscribed_event",
]
