"""Failover: an ordered provider list per channel, each behind its own circuit breaker.

`send` tries providers in order. A provider whose breaker is open is skipped. A provider that
fails with a RetryableSendError counts against its breaker, and the next provider is tried in
the same attempt, unless the error is *ambiguous* (a timeout after the request was written: the
provider may have accepted it), because then a second provider could deliver a duplicate; the
error goes back to the retry policy instead. When every breaker is open, RetryableSendError
(`all_providers_unavailable`) carries the time until the first breaker probes again.

Each provider also has a concurrency limit (`limits`, default DEFAULT_LIMIT): at most that many
of its sends are in flight at once, so a slow provider holds only its own slots. `slot` bounds
the channel as a whole (the largest provider limit); the deliver stage takes it, and then its
process-wide gate, *before* it claims a notification, so a claimed notification waits for a
provider slot only while failing over to a provider with a smaller limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from processors.breaker import BreakerConfig, CircuitBreaker
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.pacing import Pacer
from processors.provider import Provider
from schemas.content import Content
from schemas.notification import Notification

__all__ = ["AMBIGUOUS_CODES", "DEFAULT_LIMIT", "Failover", "SendResult"]

log = logging.getLogger(__name__)

# Codes (see processors/http.py) after which the provider may already have the message.
AMBIGUOUS_CODES = frozenset({"timeout", "transport_error"})

# Sends in flight per provider when `limits` does not name it.
DEFAULT_LIMIT = 32


@dataclass(frozen=True)
class SendResult:
    """Which provider carried the message, and its message id (both go into `sent`)."""

    provider: str
    message_id: str


class Failover:
    """A channel's providers, primary first; itself a Provider (name `failover:<channel>`)."""

    def __init__(
        self,
        channel: str,
        providers: Sequence[Provider],
        *,
        breaker_config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: Mapping[str, int] | None = None,
        rates: Mapping[str, float] | None = None,
    ) -> None:
        if not providers:
            raise ValueError(f"channel {channel!r}: no providers configured: list at least one")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"channel {channel!r}: provider names must be unique, got {names}")
        for p in providers:
            if p.channel != channel:
                raise ValueError(
                    f"provider {p.name!r} serves channel {p.channel!r}, not {channel!r}: "
                    "list it under its own channel"
                )
        self.channel = channel
        self.name = f"failover:{channel}"
        self.providers = tuple(providers)
        self.breakers = {
            p.name: CircuitBreaker(p.name, breaker_config, clock=clock) for p in providers
        }
        sizes = {p.name: (limits or {}).get(p.name, DEFAULT_LIMIT) for p in providers}
        if any(v < 1 for v in sizes.values()):
            raise ValueError(f"channel {channel!r}: provider limits must be >= 1, got {sizes}")
        self.limits = sizes
        # asyncio primitives bind to the loop that first waits on them, not to this thread.
        self._slots = {name: asyncio.Semaphore(v) for name, v in sizes.items()}
        self.slot = asyncio.Semaphore(max(sizes.values()))
        # Providers with a send rate (`rate_per_s`): a send waits for its token, in order.
        self._pacers = {
            name: Pacer(rate, clock=clock) for name, rate in (rates or {}).items() if rate
        }

    async def send(self, n: Notification, content: Content) -> str:
        """Provider protocol: the message id of whichever provider carried it."""
        return (await self.send_with(n, content)).message_id

    async def send_with(self, n: Notification, content: Content) -> SendResult:
        """Send via the first available provider; raises Retryable/PermanentSendError.

        Waits for a free slot of the provider it tries (its `limits` entry).
        """
        last: RetryableSendError | None = None
        tried: list[str] = []
        for provider in self.providers:  # bounded: one pass over a fixed tuple
            breaker = self.breakers[provider.name]
            if not breaker.allow():
                continue
            tried.append(provider.name)
            try:
                async with self._slots[provider.name]:
                    pacer = self._pacers.get(provider.name)
                    if pacer is not None:
                        await pacer.acquire()
                    msgid = await provider.send(n, content)
            except RetryableSendError as exc:
                breaker.failure()
                log.warning("provider %s failed for %s: %s", provider.name, n.id, exc)
                last = exc
                if exc.code in AMBIGUOUS_CODES:
                    raise
                continue
            except PermanentSendError:
                breaker.success()  # the provider answered; the message is at fault
                raise
            except BaseException:
                breaker.cancelled()
                raise
            breaker.success()
            return SendResult(provider.name, msgid)
        if last is not None:
            raise RetryableSendError(
                f"channel {self.channel!r}: every available provider failed "
                f"({', '.join(tried)}); last: {last}",
                code=last.code,
                retry_after_s=last.retry_after_s,
            )
        wait = min(b.retry_in() for b in self.breakers.values())
        raise RetryableSendError(
            f"channel {self.channel!r}: every provider's circuit breaker is open "
            f"({', '.join(self.breakers)}); retrying after the first probe is due in {wait:.1f}s",
            code="all_providers_unavailable",
            retry_after_s=wait,
        )

    async def close(self) -> None:
        """Close every provider (errors are logged so one bad close doesn't leak the rest)."""
        for p in self.providers:
            try:
                await p.close()
            except Exception:
                log.exception("closing provider %s failed", p.name)
