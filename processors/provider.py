"""The contract every channel provider meets: `Provider`, and `expect_content` for its `send`.

Implementations live under `processors/channels/`, one per channel; `Failover`
(processors/failover.py) is itself a Provider over a channel's ordered list of them.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from processors.exceptions import PermanentSendError
from schemas.content import Content
from schemas.notification import Notification

__all__ = ["Provider", "expect_content"]

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
