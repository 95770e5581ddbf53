"""The email provider: one notification as one mail over SMTP; the Message-ID derives from its id.

Plain mail takes the fast path (`mime.fast_mime`, bytes written directly); anything unusual
(non-ASCII or odd addresses) falls back to `smtp.build_message`, which validates with the
stdlib parser. Either way `smtp.SmtpSender` sends it over its connection pool.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

from processors.channels.email.mime import fast_mime
from processors.channels.email.smtp import SmtpSender, build_message
from processors.channels.email.unsubscribe import UnsubscribeLinks
from processors.provider import expect_content
from schemas.content import Content, EmailContent
from schemas.notification import Notification
from schemas.settings import SmtpSettings

__all__ = ["EmailProvider"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class EmailProvider:
    """Email over SMTP; the Message-ID derives from the notification id."""

    channel = "email"

    def __init__(
        self,
        settings: SmtpSettings,
        name: str = "smtp",
        pool_size: int = 8,
        unsubscribe: UnsubscribeLinks | None = None,
    ) -> None:
        self.name = name
        # One-click unsubscribe links for directory recipients (None: no such header).
        self._unsubscribe = unsubscribe
        self._settings = settings
        self._sender = SmtpSender(settings, pool_size=pool_size)  # validates from_address
        # The From header is the same for every mail: check it once for the fast path.
        _, from_addr = parseaddr(settings.from_address)
        fast = settings.from_address.isascii() and "\n" not in settings.from_address
        self._from = (settings.from_address, from_addr) if fast and from_addr else None

    async def send(self, n: Notification, content: Content) -> str:
        """Send one email; blocks the calling task only (async)."""
        email = expect_content(content, EmailContent, self.name)
        extra = self._unsubscribe.headers(n) if self._unsubscribe is not None else []
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
                headers=extra,
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
            headers=dict(extra),
        )
        return await self._sender.send(msg)

    async def close(self) -> None:
        """Close the SMTP connection pool."""
        await self._sender.close()
