"""Shared helpers for the email tests: message factory, sink settings, a one-shot sender."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from processors.channels.email import SmtpSender, build_message
from schemas.settings import SmtpSettings

SETTINGS = SmtpSettings()


def smtp_settings(port: int, **overrides: Any) -> SmtpSettings:
    """Settings aimed at a local sink, with a short timeout so failing tests fail fast."""
    return SmtpSettings(**{"host": "127.0.0.1", "port": port, "timeout_s": 5.0, **overrides})


def make(notification_id: str = "n-1", to: str = "jane@example.com", **kw: object) -> EmailMessage:
    args: dict[str, object] = {
        "notification_id": notification_id,
        "to": to,
        "subject": "Your order shipped",
        "html": "<p>Order <b>42</b> is on its way — ünïcödé</p>",
        "text": "Order 42 is on its way — ünïcödé",
        "settings": SETTINGS,
    }
    args.update(kw)
    return build_message(**args)  # type: ignore[arg-type]


def read_eml(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def send(settings: SmtpSettings, *messages: EmailMessage, **kw: object) -> list[str]:
    async def go() -> list[str]:
        async with SmtpSender(settings, **kw) as sender:  # type: ignore[arg-type]
            return [await sender.send(m) for m in messages]

    return asyncio.run(go())
