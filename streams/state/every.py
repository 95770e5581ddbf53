"""`Every(interval_s).due()`: true at most once per interval, for a warning a dependency's
outage would otherwise repeat on every request or batch (Redis away for the gateway's rate
limits, Idempotency-Keys, route's presence). Pure but for the monotonic clock."""

from __future__ import annotations

import time

__all__ = ["Every"]


class Every:
    """True from `due()` the first time, then again only once `interval_s` has passed."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self._interval_s = interval_s
        self._last: float | None = None

    def due(self) -> bool:
        """Whether the interval has passed since the last time this said True."""
        now = time.monotonic()
        if self._last is not None and now - self._last <= self._interval_s:
            return False
        self._last = now
        return True
