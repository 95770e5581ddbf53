"""The contract every channel provider meets, and the email provider over SMTP."""

from __future__ import annotations

from typing import Protocol, TypeVar

from processors.email import SmtpSender, build_message
from processors.exceptions import PermanentSendError
from schemas.content import Content, EmailContent
from schemas.notification import Notification
from schemas.settings import SmtpSettings

__all__ = ["EmailProvider", "Provider", "expect_content"]

C = TypeVar("C", bound=Content)


class Provider(Protocol):
    """Sends rendered content for one channel; nothing connects before the first send."""

    name: str
    channel: str

    async def send(self, n: Notification, content: Content) -> str:
        """Send; returns the provider's message id.

        Raises RetryableSendError (try later) or PermanentSendError (dead-letter it).
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def expect_content(content: Content, kind: type[C], provider: str) -> C:
    """Narrow `content` to the type a provider sends; PermanentSendError when it is another."""
    if not isinstance(content, kind):
        raise PermanentSendError(
            f"provider {provider!r} sends {kind.__name__}, got {type(content).__name__}: "
            "the template's channel does not match the provider's; fix the rule or the catalog",
            code="wrong_content_type",
        )
    return content


class EmailProvider:
    """Email over SMTP; the Message-ID derives from the notification id."""

    channel = "email"

    def __init__(self, settings: SmtpSettings, name: str = "smtp", pool_size: int = 8) -> None:
        self.name = name
        self._settings = settings
        self._sender = SmtpSender(settings, pool_size=pool_size)

    async def send(self, n: Notification, content: Content) -> str:
        """Send one email; blocks the calling task only (async)."""
        email = expect_content(content, EmailContent, self.name)
        msg = build_message(
            notification_id=n.id,
            to=n.recipient,
            subject=email.subject,
            html=email.html,
            text=email.text,
            settings=self._settings,
        )
        return await self._sender.send(msg)

    async def close(self) -> None:
        """Close the SMTP connection pool."""
        await self._sender.close()
