"""A per-provider circuit breaker: failure rate over a sliding time window; pure, injected clock.

closed ──(≥ min_calls in window and failure rate ≥ threshold)──► open
open ──(open_for_s elapsed)──► half_open: up to `half_open_probes` sends go through
half_open ──(a probe succeeds `close_after` times)──► closed (window cleared)
half_open ──(a probe fails)──► open again, for open_for_s

Only provider trouble counts as failure (RetryableSendError: 5xx, 429, timeouts, refused
connections). A PermanentSendError (bad recipient) proves the provider answered: a success.
Not thread-safe: one breaker belongs to one event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerConfig:
    """Tuning for one provider's breaker."""

    window_s: float = 30.0
    min_calls: int = 10
    failure_rate: float = 0.5
    open_for_s: float = 15.0
    half_open_probes: int = 1
    close_after: int = 1
    # Hard bound on remembered outcomes, whatever the traffic (memory stays O(max_samples)).
    max_samples: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError(f"breaker failure_rate must be in (0, 1], got {self.failure_rate}")
        if self.window_s <= 0 or self.open_for_s <= 0:
            raise ValueError("breaker window_s and open_for_s must be > 0: fix the settings")
        if min(self.min_calls, self.half_open_probes, self.close_after, self.max_samples) < 1:
            raise ValueError(
                "breaker min_calls, half_open_probes, close_after, max_samples must be >= 1"
            )


class CircuitBreaker:
    """Call `allow()` before a send; then exactly one of `success()`, `failure()`, `cancelled()`."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._samples: deque[tuple[float, bool]] = deque(maxlen=self.config.max_samples)
        self._failures = 0
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        # Counts for metrics: how often the breaker opened.
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        """The current state (open turns half_open once open_for_s has elapsed)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.config.open_for_s:
            self._state = "half_open"
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._state

    def peek(self) -> BreakerState:
        """The state `state` would return, without moving open to half_open: safe to call
        from another thread (the metrics scrape)."""
        if self._state == "open" and self._clock() - self._opened_at >= self.config.open_for_s:
            return "half_open"
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.config.open_for_s - (self._clock() - self._opened_at))

    def failure_rate(self) -> float:
        """Failure share of the outcomes inside the window (0.0 when empty)."""
        self._expire()
        return self._failures / len(self._samples) if self._samples else 0.0

    def allow(self) -> bool:
        """May a send go to this provider now? In half_open this claims a probe slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        if self._probes_in_flight < self.config.half_open_probes:
            self._probes_in_flight += 1
            return True
        return False

    def success(self) -> None:
        """Record that the provider answered (2xx, or a permanent refusal of the message)."""
        if self._state == "half_open":
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            self._probe_successes += 1
            if self._probe_successes >= self.config.close_after:
                self._close()
            return
        self._record(ok=True)

    def failure(self) -> None:
        """Record provider trouble; may open the breaker."""
        if self._state == "half_open":
            self._open()
            return
        self._record(ok=False)
        cfg = self.config
        if (
            self._state == "closed"
            and len(self._samples) >= cfg.min_calls
            and self._failures / len(self._samples) >= cfg.failure_rate
        ):
            self._open()

    def cancelled(self) -> None:
        """The send was cancelled before an outcome: give back a half_open probe slot."""
        if self._state == "half_open":
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def _record(self, *, ok: bool) -> None:
        if len(self._samples) == self._samples.maxlen and not self._samples[0][1]:
            self._failures -= 1  # the oldest sample falls off the bounded deque
        self._samples.append((self._clock(), ok))
        if not ok:
            self._failures += 1
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self.config.window_s
        while self._samples and self._samples[0][0] < horizon:  # bounded by max_samples
            _, ok = self._samples.popleft()
            if not ok:
                self._failures -= 1

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probes_in_flight = 0
        self.opened_count += 1

    def _close(self) -> None:
        self._state = "closed"
        self._samples.clear()
        self._failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state!r})"
