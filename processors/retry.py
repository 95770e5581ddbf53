"""The retry policy: what to do after a send, pure (no I/O, no clock of its own).

After every send the deliver stage asks `RetryPolicy.decide` what happens next:

- `ok`: publish `sent`;
- `retry`: publish to the retry topic of `decision.tier_s` with `decision.due_at` in a header;
  the retry stage waits until `due_at` (never earlier) and hands the message back to deliver;
- `dlq`: dead-letter now with a `failed` status (permanent error or attempts exhausted).

Backoff is full jitter (AWS architecture blog, "Exponential Backoff and Jitter"):
`uniform(0, min(cap, base * 2**(attempt-1)))`, and never less than the provider's `Retry-After`.
Delay tiers are the retry topics (`notification.retry.1s`, `…10s`, …): a delay goes to the
smallest tier that is at least as long, so a message never comes back before it is due; a delay
longer than the largest tier goes to the largest, and the retry stage re-parks it until due.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import httpx

from processors.exceptions import PermanentSendError, RetryableSendError
from schemas import codes
from schemas.channels import Priority

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIERS_S",
    "Decision",
    "Outcome",
    "RetryPolicy",
    "classify",
    "tier_topic",
]

Outcome = Literal["ok", "retry", "dlq"]

DEFAULT_TIERS_S: tuple[float, ...] = (1.0, 10.0, 60.0, 600.0)
DEFAULT_MAX_ATTEMPTS: Mapping[Priority, int] = {"critical": 10, "high": 8, "normal": 6, "low": 3}


def classify(exc: BaseException | None) -> Outcome:
    """Map a send's result to an outcome; pure, never raises.

    RetryableSendError, timeouts and transport errors retry; PermanentSendError and anything
    unexpected (a bug: retrying the same input would fail the same way) dead-letter at once,
    to be replayed from the DLQ after the fix.
    """
    if exc is None:
        return "ok"
    if isinstance(exc, RetryableSendError):
        return "retry"
    if isinstance(exc, PermanentSendError):
        return "dlq"
    if isinstance(exc, TimeoutError | ConnectionError | httpx.TransportError):
        return "retry"
    return "dlq"


def tier_topic(prefix: str, tier_s: float) -> str:
    """Name of the retry topic for a tier, e.g. `notification.retry.` + 10.0 → `….retry.10s`."""
    return f"{prefix}{tier_s:g}s"


@dataclass(frozen=True)
class Decision:
    """What the deliver stage does next; `error_code` goes into the status event."""

    outcome: Outcome
    attempt: int
    delay_s: float = 0.0
    tier_s: float | None = None
    due_at: float | None = None
    error_code: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff, Retry-After, attempts per priority, delay tiers."""

    base_s: float = 1.0
    cap_s: float = 600.0
    tiers_s: tuple[float, ...] = DEFAULT_TIERS_S
    max_attempts: Mapping[Priority, int] = field(default_factory=lambda: dict(DEFAULT_MAX_ATTEMPTS))
    # A provider asking for more than this is treated as permanently refusing (a misconfigured
    # or hostile Retry-After must not park a message for days).
    max_retry_after_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(
                f"retry policy: need 0 < base_s <= cap_s, got base_s={self.base_s} "
                f"cap_s={self.cap_s}: fix the retry settings"
            )
        if not self.tiers_s or list(self.tiers_s) != sorted(set(self.tiers_s)):
            raise ValueError(
                f"retry policy: tiers_s {self.tiers_s} must be non-empty, strictly increasing: "
                "fix the retry tier settings"
            )
        if self.tiers_s[0] <= 0:
            raise ValueError(f"retry policy: tiers must be > 0 s, got {self.tiers_s[0]}")
        for prio in get_args(Priority):
            n = self.max_attempts.get(prio)
            if not isinstance(n, int) or n < 1:
                raise ValueError(
                    f"retry policy: max_attempts[{prio!r}] must be an int >= 1, got {n!r}: "
                    "set it for every priority"
                )

    def attempts_for(self, priority: Priority) -> int:
        """The most sends a notification of `priority` gets, the first one included."""
        return self.max_attempts[priority]

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter delay before attempt `attempt + 1`; `attempt` counts from 1."""
        # min() before the power would be nicer, but 2**attempt of a float overflows only
        # past ~1000; attempts are bounded by max_attempts long before that.
        exp = min(max(attempt - 1, 0), 60)
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**exp))

    def tier_for(self, delay_s: float) -> float:
        """The smallest tier >= `delay_s`, or the largest tier (then re-parked until due)."""
        for tier in self.tiers_s:
            if delay_s <= tier:
                return tier
        return self.tiers_s[-1]

    def decide(
        self,
        exc: BaseException | None,
        *,
        attempt: int,
        priority: Priority,
        now: float,
        rng: random.Random,
    ) -> Decision:
        """Decide after attempt `attempt` (1-based) ended with `exc` (None = success)."""
        outcome = classify(exc)
        code = getattr(exc, "code", None) if exc is not None else None
        if exc is not None and code is None:
            code = type(exc).__name__
        if outcome == "ok":
            return Decision("ok", attempt)
        if outcome == "dlq":
            return Decision("dlq", attempt, error_code=code, reason=str(exc))
        limit = self.attempts_for(priority)
        if attempt >= limit:
            return Decision(
                "dlq",
                attempt,
                error_code=codes.RETRIES_EXHAUSTED,
                reason=(
                    f"gave up after {attempt} attempts (max for priority {priority!r} is "
                    f"{limit}); last error: {exc}: fix the provider, then replay from the DLQ"
                ),
            )
        hint = exc.retry_after_s if isinstance(exc, RetryableSendError) else None
        if hint is not None and hint > self.max_retry_after_s:
            return Decision(
                "dlq",
                attempt,
                error_code="retry_after_too_long",
                reason=(
                    f"provider asked to wait {hint:.0f}s, more than max_retry_after_s "
                    f"{self.max_retry_after_s:.0f}s; last error: {exc}: replay from the DLQ later"
                ),
            )
        delay = self.backoff(attempt, rng)
        if hint is not None:
            delay = max(delay, hint)
        return Decision(
            "retry",
            attempt,
            delay_s=delay,
            tier_s=self.tier_for(delay),
            due_at=now + delay,
            error_code=code,
            reason=str(exc),
        )
