"""The contract every channel provider meets, and the email provider over SMTP."""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Protocol, TypeVar

from processors.email import SmtpSender, build_message
from processors.exceptions import PermanentSendError
from processors.mime import fast_mime
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


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class EmailProvider:
    """Email over SMTP; the Message-ID derives from the notification id."""

    channel = "email"

    def __init__(self, settings: SmtpSettings, name: str = "smtp", pool_size: int = 8) -> None:
        self.name = name
        self._settings = settings
        self._sender = SmtpSender(settings, pool_size=pool_size)  # validates from_address
        # The From header is the same for every mail: check it once for the fast path.
        _, from_addr = parseaddr(settings.from_address)
        fast = settings.from_address.isascii() and "\n" not in settings.from_address
        self._from = (settings.from_address, from_addr) if fast and from_addr else None

    async def send(self, n: Notification, content: Content) -> str:
        """Send one email; blocks the calling task only (async)."""
        email = expect_content(content, EmailContent, self.name)
        if self._from is not None and _UUID.match(n.id):
            raw = fast_mime(
                notification_id=n.id,
                from_header=self._from[0],
                from_addr=self._from[1],
                to=n.recipient,
                subject=email.subject,
                html=email.html,
                text=email.text,
                message_id_domain=self._settings.message_id_domain,
            )
            if raw is not None:
                return await self._sender.send_raw(raw)
        # Unusual addresses take the stdlib parser, which validates them properly.
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
