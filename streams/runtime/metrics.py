"""In-process counters, readiness and latency samples for the live summary, bench and tests.

A dict behind a lock. Samples are bounded (a reservoir per name), so a long run
keeps a fixed amount of memory.
"""

from __future__ import annotations

import random
import threading

__all__ = ["Metrics"]

_RESERVOIR = 10_000


class Metrics:
    """Named monotonically increasing counters, dependency states and samples; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._down: set[str] = set()
        self._samples: dict[str, list[float]] = {}
        self._seen: dict[str, int] = {}
        self._rng = random.Random(0)

    def incr(self, name: str, n: int = 1) -> None:
        """Add `n` to counter `name`."""
        if n:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def set_down(self, what: str, down: bool) -> None:
        """Mark a dependency as seen by one stage (`stage:dependency`) down or back up."""
        with self._lock:
            if down:
                self._down.add(what)
            else:
                self._down.discard(what)

    def ready(self) -> bool:
        """Readiness: False while any stage of this process waits for a dependency."""
        with self._lock:
            return not self._down

    def down(self) -> list[str]:
        """The `stage:dependency` pairs currently down, sorted."""
        with self._lock:
            return sorted(self._down)

    def observe(self, name: str, value: float) -> None:
        """Keep a sample of `name` (reservoir sampling: at most 10,000 kept per name)."""
        with self._lock:
            seen = self._seen.get(name, 0) + 1
            self._seen[name] = seen
            kept = self._samples.setdefault(name, [])
            if len(kept) < _RESERVOIR:
                kept.append(value)
            else:
                j = self._rng.randrange(seen)
                if j < _RESERVOIR:
                    kept[j] = value

    def quantiles(self, name: str, qs: tuple[float, ...] = (0.5, 0.99)) -> dict[float, float]:
        """Quantiles of the kept samples of `name` (nearest rank); {} when none were seen."""
        with self._lock:
            kept = sorted(self._samples.get(name, ()))
        if not kept:
            return {}
        return {q: kept[min(len(kept) - 1, max(0, int(q * len(kept) + 0.5) - 1))] for q in qs}
