"""What a stage process's garbage collections scan: only what is younger than a second.

A collection walks every tracked object of the generations it collects, and all threads wait.
Two costs showed in the gateway's latency (issue 15, docs/benchmarks.md):

- **The set-up.** Right after start a gateway or route process holds ~135,000 objects that
  live as long as it (modules, classes, pydantic and CEL programs, the catalog), ~200 ms
  per full collection on this machine.
- **Medium-lived churn.** At 10,000 Socket.IO connections each holds a few asyncio timers,
  tasks and futures that are replaced every ping (25 s) or message. CPython counts a young
  collection due when allocations minus deallocations pass the threshold, and these die
  old: the young generation grew to 530,000 objects between collections (threshold
  50,000) and one young collection held the process 435 ms.

`gc.freeze()` moves every object into a permanent generation that collections skip, in O(1);
an object frozen whose last reference goes is still freed at once (reference counting). So
the heap is frozen `settle_s` after start, and again every `every_s`: collections only
ever walk what is younger than that. What freezing gives up is cyclic garbage among frozen
objects, which only a full collection of an unfrozen heap reclaims: that is done every
`reclaim_s` and after each catalog switch (the old catalog goes), one pause per period
instead of one every few seconds. `close` unfreezes, so an in-process caller (a test) gets
its heap back as it was.

Every collection's pause is observed in `tidings_gc_pause_seconds{generation}` (a
`gc.callbacks` hook, installed by `start_pause_metrics`), so an operator sees what the
collector costs. Timing logic over `gc`; called from the process's main loop, never blocks
beyond the one collection it runs.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from streams.observe.metric_defs import GC_PAUSE

__all__ = ["HeapFreezer", "start_pause_metrics", "stop_pause_metrics"]

log = logging.getLogger(__name__)

SLOW_S = 0.1  # a collection this long is logged (at most once a minute, from `tick`)
_started: list[float] = []  # perf_counter at the "start" of the collection in progress
_children = [GC_PAUSE.labels(str(g)) for g in range(3)]
# The slowest collection since the last log: (seconds, generation, collected, uncollectable).
_slowest: list[tuple[float, int, int, int]] = []


def _on_gc(phase: str, info: dict[str, int]) -> None:
    # Collections don't nest and the GIL is held throughout: one slot is enough. Nothing is
    # logged here (a collection can start inside a logging call): `tick` logs it.
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        took = time.perf_counter() - _started.pop()
        gen = min(info.get("generation", 2), 2)
        _children[gen].observe(took)
        if took >= SLOW_S and (not _slowest or took > _slowest[0][0]):
            _slowest[:] = [(took, gen, info.get("collected", 0), info.get("uncollectable", 0))]


def start_pause_metrics() -> None:
    """Observe every collection's pause from now on (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def stop_pause_metrics() -> None:
    """Stop observing (idempotent)."""
    if _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)


class HeapFreezer:
    """Freezes the heap once set up, refreezes it every `every_s`, and reclaims (unfreeze,
    full collection, freeze) every `reclaim_s` and after each catalog switch."""

    def __init__(
        self,
        settle_s: float | None,
        every_s: float | None = None,
        reclaim_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._enabled = settle_s is not None
        now = clock()
        self._first: float | None = None if settle_s is None else now + settle_s
        self._every_s = every_s
        self._reclaim_s = reclaim_s
        self._next_freeze: float | None = None
        self._next_reclaim: float | None = None
        self._frozen = False
        self._changed = threading.Event()  # set from the catalog's thread
        self._next_log = now

    def catalog_switched(self, _catalog: object = None) -> None:
        """Ask for a reclaim at the next `tick` (a CatalogRef listener; any thread)."""
        if self._enabled:
            self._changed.set()

    def tick(self) -> str | None:
        """Do what is due: `"reclaim"` (the first freeze, the periodic reclaim, or one after a
        catalog switch: a full collection, then freeze), `"freeze"` (freeze what is young,
        O(1)), or None. Main loop only; blocks for the full collection of a reclaim.

        Also logs the slowest collection past SLOW_S since the last such line (once a
        minute at most)."""
        now = self._clock()
        if _slowest and now >= self._next_log:
            took, gen, collected, uncollectable = _slowest.pop()
            self._next_log = now + 60.0
            log.warning(
                "a garbage collection of generation %d held this process for %.0f ms "
                "(%d objects collected, %d uncollectable): see tidings_gc_pause_seconds and "
                "runtime.gc_thresholds, gc_freeze_after_s, gc_refreeze_every_s",
                gen, took * 1000, collected, uncollectable,
            )  # fmt: skip
        if not self._enabled:
            return None
        if not self._frozen:
            if self._first is None or now < self._first:
                return None
            return self._reclaim(now)
        if self._changed.is_set() or (self._next_reclaim is not None and now >= self._next_reclaim):
            return self._reclaim(now)
        if self._next_freeze is not None and now >= self._next_freeze:
            gc.freeze()  # O(1): the young generations join the permanent one
            self._next_freeze = now + (self._every_s or 0.0)
            return "freeze"
        return None

    def _reclaim(self, now: float) -> str:
        self._changed.clear()  # before collecting: a switch from now on reclaims again
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._frozen = True
        after = self._clock()
        self._next_freeze = None if self._every_s is None else after + self._every_s
        self._next_reclaim = None if self._reclaim_s is None else after + self._reclaim_s
        log.debug("heap reclaimed and frozen after a %.0f ms full collection",
                  (time.perf_counter() - started) * 1000)  # fmt: skip
        return "reclaim"

    def close(self) -> None:
        """Unfreeze (the frozen objects join the oldest generation again)."""
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
