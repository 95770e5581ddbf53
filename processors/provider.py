"""The contract every channel provider meets, and the email provider over SMTP."""

from __future__ import annotations

from typing import Protocol

from processors.email import SmtpSender, build_message
from schemas.content import EmailContent
from schemas.notification import Notification
from schemas.settings import SmtpSettings

__all__ = ["EmailProvider", "Provider"]


class Provider(Protocol):
    """Sends rendered content for one channel; nothing connects before the first send."""

    name: str
    channel: str

    async def send(self, n: Notification, content: EmailContent) -> str:
        """Send; returns the provider's message id.

        Raises RetryableSendError (try later) or PermanentSendError (dead-letter it).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class EmailProvider:
    """Email over SMTP; the Message-ID derives from the notification id."""

    channel = "email"

    def __init__(self, settings: SmtpSettings, name: str = "smtp", pool_size: int = 8) -> None:
        self.name = name
        self._settings = settings
        self._sender = SmtpSender(settings, pool_size=pool_size)

    async def send(self, n: Notification, content: EmailContent) -> str:
        """Send one email; blocks the calling task only (async)."""
        msg = build_message(
            notification_id=n.id,
            to=n.recipient,
            subject=content.subject,
            html=content.html,
            text=content.text,
            settings=self._settings,
        )
        return await self._sender.send(msg)

    async def close(self) -> None:
        """Close the SMTP connection pool."""
        await self._sender.close()
