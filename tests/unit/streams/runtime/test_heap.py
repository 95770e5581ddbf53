"""HeapFreezer with a fake clock, over this process's real `gc`: frozen once set-up has
settled, refrozen (old cycles reclaimed) after a catalog switch, unfrozen on close."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.runtime.heap import HeapFreezer


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # whatever a failing test left frozen


def test_it_freezes_once_settled_and_unfreezes_on_close() -> None:
    clock = _Clock()
    heap = HeapFreezer(10.0, clock=clock)
    assert heap.tick() is None and gc.get_freeze_count() == 0
    clock.now += 10
    assert heap.tick() == "reclaim"
    assert gc.get_freeze_count() > 0
    clock.now += 1000
    assert heap.tick() is None, "no refreeze or reclaim period: once"
    heap.close()
    assert gc.get_freeze_count() == 0


def test_it_refreezes_what_is_young_and_reclaims_on_its_period() -> None:
    clock = _Clock()
    heap = HeapFreezer(0.0, every_s=1.0, reclaim_s=60.0, clock=clock)
    assert heap.tick() == "reclaim"
    young = [_Cycle() for _ in range(100)]
    assert heap.tick() is None, "not due yet"
    frozen = gc.get_freeze_count()
    clock.now += 1
    assert heap.tick() == "freeze"
    assert gc.get_freeze_count() >= frozen + 100, "the young objects joined the frozen ones"
    gone = weakref.ref(young[0])
    del young
    gc.collect()
    assert gone() is not None, "cyclic garbage among frozen objects waits for a reclaim"
    clock.now += 59
    assert heap.tick() == "reclaim"
    assert gone() is None, "the reclaim's full collection took it"
    heap.close()


def test_a_catalog_switch_reclaims_the_old_cycles() -> None:
    clock = _Clock()
    heap = HeapFreezer(0.0, clock=clock)
    old = _Cycle()  # stands for the old catalog: cyclic, alive at the freeze
    gone = weakref.ref(old)
    assert heap.tick() == "reclaim"
    del old
    gc.collect()
    assert gone() is not None, "frozen: a full collection does not reclaim it"
    heap.catalog_switched(object())
    assert heap.tick() == "reclaim"
    assert gone() is None, "the reclaim collected before freezing again"
    assert gc.get_freeze_count() > 0
    heap.close()


def test_a_switch_before_the_first_freeze_adds_no_second_one() -> None:
    clock = _Clock()
    heap = HeapFreezer(5.0, clock=clock)
    heap.catalog_switched()
    assert heap.tick() is None
    clock.now += 5
    assert heap.tick() == "reclaim"
    assert heap.tick() is None
    heap.close()


def test_none_never_freezes() -> None:
    heap = HeapFreezer(None, 1.0, 60.0, _Clock())
    heap.catalog_switched()
    assert heap.tick() is None
    heap.close()
    assert gc.get_freeze_count() == 0


def test_every_collection_is_observed_by_generation() -> None:
    from streams.observe.metric_defs import REGISTRY
    from streams.runtime.heap import start_pause_metrics, stop_pause_metrics

    def count(gen: str) -> float:
        got = REGISTRY.get_sample_value("tidings_gc_pause_seconds_count", {"generation": gen})
        return got or 0.0

    before = count("2"), count("0")
    start_pause_metrics()
    start_pause_metrics()  # idempotent: observed once, not twice
    try:
        gc.collect()
        gc.collect(0)
    finally:
        stop_pause_metrics()
    assert count("2") - before[0] == 1
    assert count("0") - before[1] >= 1  # and any young collection meanwhile
    gc.collect()
    assert count("2") - before[0] == 1, "stopped: no longer observed"
