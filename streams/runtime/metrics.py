"""In-process counters, health and latency samples for the live summary, probes, bench and tests.

A dict behind a lock. Samples are bounded (a reservoir per name), so a long run
keeps a fixed amount of memory. The health part (`expect`, `beat`, `set_down`) is what
`/healthz` and `/readyz` answer from (streams/observe/server.py); the Prometheus series
are declared in streams/observe/metric_defs.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from streams.observe.metric_defs import READY

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
        # stage → monotonic time of its loop's last progress; None until its loop runs.
        self._beats: dict[str, float | None] = {}
        self._extra_down: Callable[[], list[str]] = list
        # `http://host:port` of this process's /metrics server once it serves (None: none).
        self.endpoint: str | None = None

    # ---------------------------------------------------------------- health

    def expect(self, stage: str) -> None:
        """Name a stage this process runs: not ready, and not live, until it beats."""
        with self._lock:
            self._beats.setdefault(stage, None)
        READY.labels(stage).set_function(lambda: 1.0 if self.stage_ready(stage) else 0.0)

    def beat(self, stage: str) -> None:
        """The loop of `stage` made progress (or is waiting out an outage on purpose)."""
        self._beats[stage] = time.monotonic()  # one store: atomic, no lock on the hot path

    def also_down(self, source: Callable[[], list[str]]) -> None:
        """Add a source of `dependency` names down (the dependency probe) to readiness."""
        self._extra_down = source

    def liveness(self, bound_s: float) -> tuple[bool, str]:
        """Whether every expected stage beat within `bound_s` (after it first beat)."""
        now = time.monotonic()
        with self._lock:
            beats = dict(self._beats)
        stalled = [
            f"{st}: no progress for {now - t:.0f} s (bound {bound_s:g} s)"
            for st, t in sorted(beats.items())
            if t is not None and now - t > bound_s
        ]
        return (not stalled, "\n".join(stalled) or "ok")

    def stage_ready(self, stage: str) -> bool:
        """Whether `stage` runs with nothing it depends on down."""
        with self._lock:
            if self._beats.get(stage) is None:
                return False
            if any(d.startswith(f"{stage}:") for d in self._down):
                return False
        return not self._extra_down()

    def readiness(self) -> tuple[bool, str]:
        """Whether every expected stage runs with its dependencies up; the reasons if not."""
        with self._lock:
            waiting = [f"{st}: starting" for st, t in sorted(self._beats.items()) if t is None]
            down = [f"{d.replace(':', ': ', 1)} unreachable" for d in sorted(self._down)]
        down += [f"{d} unreachable (probe)" for d in self._extra_down()]
        problems = waiting + down
        return (not problems, "\n".join(problems) or "ok")

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
        if down:
            self.beat(what.split(":", 1)[0])  # waiting out an outage is progress
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
