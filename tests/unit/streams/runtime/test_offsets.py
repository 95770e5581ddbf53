"""OffsetTracker: commit the finished prefix only; count in-flight records per topic."""

from __future__ import annotations

from streams.runtime.offsets import OffsetTracker
from streams.runtime.records import Out


def test_only_the_finished_prefix_is_committed_with_its_outputs_in_order() -> None:
    t = OffsetTracker()
    for off in (5, 6, 7):
        t.add(("a", 0), off)
    out = Out("status", b"x", None, [])
    t.done(("a", 0), 6, [out])
    assert t.take() == ({}, [])  # 5 is still in flight
    t.done(("a", 0), 5)
    assert t.take() == ({("a", 0): 7}, [out])
    assert t.in_flight == 1


def test_topics_at_their_bound_are_reported_and_free_again_when_done_or_revoked() -> None:
    t = OffsetTracker()
    for off in range(3):
        t.add(("slow", 0), off)
        t.add(("slow", 1), off)
    t.add(("fast", 0), 0)
    assert t.topics_at(5) == {"slow"}
    t.done(("slow", 0), 0)
    assert t.topics_at(5) == {"slow"}  # 5 still in flight
    t.done(("slow", 0), 1)
    assert t.topics_at(5) == set()
    assert t.revoke([("slow", 1)]) == 3
    assert t.topics_at(1) == {"slow", "fast"}
    assert t.in_flight == 2
