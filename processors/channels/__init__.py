"""One module or package per channel, each holding that channel's Provider and its helpers.

- `email/`: `EmailProvider` over SMTP (the only part of `processors` that imports aiosmtplib);
- `push/`: FCM and APNs (channel `push`), Web Push (channel `webpush`), dead tokens;
- `sms`: `TwilioSmsProvider`, and the pure checks of Twilio's status callbacks;
- `slack`: `SlackProvider`, Slack incoming webhooks;
- `webhook`: `WebhookProvider`, signed per Standard Webhooks;
- `inapp`: `InAppProvider`, the Postgres inbox woken over Redis.

The names of `sms`, `slack`, `webhook` and `inapp` are re-exported here, each imported on first
use (PEP 562), so importing one channel never loads another's dependencies (psycopg and
Redis for `inapp`, for instance). `email` and `push` re-export their own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processors.channels.inapp import DEFAULT_TABLE, InAppProvider
    from processors.channels.slack import MAX_BLOCKS, MAX_TEXT, SlackProvider, slack_payload
    from processors.channels.sms import (
        NID_PARAM,
        UNREACHABLE_CODES,
        TwilioSmsProvider,
        callback_status,
        twilio_signature,
        validate_twilio_signature,
        with_notification_id,
    )
    from processors.channels.webhook import WebhookProvider, decode_secret, sign
else:
    # Which names each module exports (tests/unit/processors/test_exports.py checks this
    # against the modules' own __all__).
    _MODULES = {
        "inapp": ("DEFAULT_TABLE", "InAppProvider"),
        "slack": ("MAX_BLOCKS", "MAX_TEXT", "SlackProvider", "slack_payload"),
        "sms": (
            "NID_PARAM",
            "UNREACHABLE_CODES",
            "TwilioSmsProvider",
            "callback_status",
            "twilio_signature",
            "validate_twilio_signature",
            "with_notification_id",
        ),
        "webhook": ("WebhookProvider", "decode_secret", "sign"),
    }
    _EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DEFAULT_TABLE",
    "MAX_BLOCKS",
    "MAX_TEXT",
    "NID_PARAM",
    "UNREACHABLE_CODES",
    "InAppProvider",
    "SlackProvider",
    "TwilioSmsProvider",
    "WebhookProvider",
    "callback_status",
    "decode_secret",
    "sign",
    "slack_payload",
    "twilio_signature",
    "validate_twilio_signature",
    "with_notification_id",
]
