"""Dead device tokens and push subscriptions: the error, and the hook the directory plugs in.

FCM `UNREGISTERED`, APNs `410 Unregistered` and Web Push 404/410 mean the address will never
work again. The provider calls the hook (the recipient directory removes or flags the token),
then raises DeadTokenError, a PermanentSendError with code `dead_token`: the deliver stage
publishes `failed` with that code and does not retry. A failing hook is logged, never raised:
the send's outcome must not depend on the directory being up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from processors.exceptions import PermanentSendError
from schemas.notification import Notification

__all__ = ["DeadToken", "DeadTokenError", "DeadTokenHook", "report_dead"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadToken:
    """What the directory needs to forget an address."""

    channel: str
    provider: str
    recipient: str
    token: str
    reason: str
    notification_id: str


DeadTokenHook = Callable[[DeadToken], Awaitable[None]]


class DeadTokenError(PermanentSendError):
    """The device token or subscription is gone for good; retrying cannot help."""

    def __init__(self, dead: DeadToken) -> None:
        super().__init__(
            f"{dead.channel} address of recipient {dead.recipient!r} is dead at "
            f"{dead.provider} ({dead.reason}): the app was uninstalled or the subscription "
            "expired; the recipient directory was told to drop it",
            code="dead_token",
        )
        self.dead = dead


async def report_dead(
    hook: DeadTokenHook | None,
    n: Notification,
    *,
    provider: str,
    token: str,
    reason: str,
) -> DeadTokenError:
    """Call the hook (errors logged), and return the error for the caller to raise."""
    dead = DeadToken(n.channel, provider, n.recipient, token, reason, n.id)
    if hook is not None:
        try:
            await hook(dead)
        except Exception:
            log.exception("dead-token hook failed for %s at %s", n.recipient, provider)
    return DeadTokenError(dead)
