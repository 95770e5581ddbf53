"""Send pacing: hold a provider to its rate (Twilio's 100 messages/s) by waiting, never dropping.

`Pacer(rate_per_s, burst)` is a token bucket: it holds up to `burst` tokens, refilled at
`rate_per_s`; `await pacer.acquire()` takes one, waiting until it is there. Waiters are
served in arrival order: each takes its token at once, going into debt, and sleeps until the
debt is paid, so there is no wake-up race and no busy loop. A cancelled waiter gives its
token back.

Pure timing: the clock and the sleep are injected (`time.monotonic` and `asyncio.sleep` by
default), so tests drive it with a fake clock. `reserve(n)` is the arithmetic alone.

A Pacer paces one process: N deliver workers sharing a provider each get `rate / N`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["Pacer"]


class Pacer:
    """A token bucket of `burst` tokens refilled at `rate_per_s` (module docstring).

    `burst` defaults to one second's worth (at least 1). Raises ValueError for a rate that
    isn't a positive finite number or a burst below 1.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s!r}")
        burst = max(1, math.ceil(rate_per_s)) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)  # negative: owed to waiters already promised a token
        self._at = clock()

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now

    def reserve(self, n: int = 1) -> float:
        """Take `n` tokens now (into debt if need be); returns the seconds to wait for them."""
        if not 1 <= n <= self.burst:
            raise ValueError(f"n must be between 1 and the burst ({self.burst}), got {n}")
        self._refill(self._clock())
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s

    def refund(self, n: int = 1) -> None:
        """Give back `n` tokens reserved but not used (a cancelled send)."""
        self._refill(self._clock())
        self._tokens = min(float(self.burst), self._tokens + n)

    @property
    def backlog_s(self) -> float:
        """How long a new `acquire` would wait now (0 when a token is free)."""
        self._refill(self._clock())
        return max(0.0, (1 - self._tokens) / self.rate_per_s)

    async def acquire(self, n: int = 1) -> float:
        """Wait until `n` tokens are this caller's; returns the seconds waited (by the clock).

        Cancelled while waiting: the tokens go back, and CancelledError propagates.
        """
        wait = self.reserve(n)
        if wait <= 0:
            return 0.0
        try:
            await self._sleep(wait)
        except asyncio.CancelledError:
            self.refund(n)
            raise
        return wait
