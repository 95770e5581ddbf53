"""In-process counters for the live summary and tests (a dict behind a lock)."""

from __future__ import annotations

import threading

__all__ = ["Metrics"]


class Metrics:
    """Named monotonically increasing counters, safe across stage threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def incr(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        if n:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)
