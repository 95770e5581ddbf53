"""Riding out a dependency outage: bounded full-jitter backoff, one log line per state change.

A stage that finds Kafka, Postgres or Redis unreachable does not exit: it keeps the
work it holds, waits `Outage.failed()` seconds and tries again. The tracker logs when
the dependency goes down and when it is back (never once per record), flips the
process's readiness through `Metrics`, and raises `FatalStageError` only when the
outage outlasts its configured bound (None: ride it out forever).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from streams.exceptions import DependencyDown, FatalStageError, StageStopping
from streams.runtime.metrics import Metrics

__all__ = ["Outage", "backoff_s"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_s(failures: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(failures-1))]; pure."""
    # The exponent is capped: 2**n of a long outage's failure count overflows a float.
    return rng.uniform(0, min(cap_s, base_s * (2 ** min(40, max(0, failures - 1)))))


class Outage:
    """The up/down state of one dependency as one stage sees it; thread-safe, no I/O."""

    def __init__(
        self,
        stage: str,
        dependency: str,
        *,
        limit_s: float | None,
        metrics: Metrics | None = None,
        base_s: float = 0.1,
        cap_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.stage = stage
        self.dependency = dependency
        self._limit_s = limit_s
        self._metrics = metrics
        self._base_s = base_s
        self._cap_s = cap_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """Whether the last try failed."""
        return self._since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failed try; returns how long to wait before the next one.

        Raises FatalStageError when the dependency has been down longer than the bound.
        """
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now
                self._failures = 0
                log.warning(
                    "%s: %s unreachable (%s); holding its work and retrying with backoff "
                    "until it is back%s", self.stage, self.dependency, _short(exc),
                    "" if self._limit_s is None else f" (gives up after {self._limit_s:g} s)",
                )  # fmt: skip
                if self._metrics is not None:
                    self._metrics.set_down(f"{self.stage}:{self.dependency}", True)
            self._failures += 1
            if self._metrics is not None:
                self._metrics.beat(self.stage)  # waiting out an outage is progress (/healthz)
            if self._limit_s is not None and now - self._since > self._limit_s:
                raise FatalStageError(
                    f"{self.stage}: {self.dependency} unreachable for {now - self._since:.0f} s, "
                    f"longer than the bound of {self._limit_s:g} s ({_short(exc)}); bring it "
                    "back, or raise the bound (docs/configuration.md, runtime.outage_limit_s)"
                ) from exc
            return backoff_s(self._failures, base_s=self._base_s, cap_s=self._cap_s, rng=self._rng)

    def retry(self, call: Callable[[], T], stop: threading.Event) -> T:
        """`call()` until it stops raising DependencyDown; blocks, waiting with backoff.

        Raises StageStopping if `stop` is set while waiting, FatalStageError past the bound.
        """
        while True:
            try:
                result = call()
            except DependencyDown as exc:
                if stop.wait(self.failed(exc)):
                    raise StageStopping(str(exc)) from exc
                continue
            self.ok()
            return result

    def ok(self) -> None:
        """Record a successful try; logs the recovery once."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return
            took = self._clock() - self._since
            self._since = None
            self._failures = 0
            log.warning("%s: %s is back after %.1f s; resuming", self.stage, self.dependency, took)
            if self._metrics is not None:
                self._metrics.set_down(f"{self.stage}:{self.dependency}", False)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
