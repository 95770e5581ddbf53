"""Channel processors: send one rendered notification on one channel, and their shared errors.

The API is the `Provider` contract, `Failover` (a channel's providers in order, each behind a
circuit breaker; `send_with` returns a `SendResult`), `build_providers(settings)` (one Failover
per configured channel) and the errors a send raises. The providers themselves live under
`processors.channels` (one module or package per channel).

`build_providers` is imported on first use (PEP 562): it builds every channel, email included,
so importing it loads aiosmtplib; importing `processors` or one HTTP channel does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from processors.exceptions import PermanentSendError, ProcessorError, RetryableSendError
from processors.failover import Failover, SendResult
from processors.provider import Provider

if TYPE_CHECKING:
    from processors.registry import build_providers
else:

    def __getattr__(name: str) -> object:
        if name == "build_providers":
            from processors.registry import build_providers

            return build_providers
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Failover",
    "PermanentSendError",
    "ProcessorError",
    "Provider",
    "RetryableSendError",
    "SendResult",
    "build_providers",
]
