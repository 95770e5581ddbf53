"""FlowController against a fake consumer that records pause, resume and seek."""

from __future__ import annotations

import threading
from typing import Any, cast

from confluent_kafka import Consumer, TopicPartition

from streams.runtime.flow import FlowController


class FakeConsumer:
    """Only what the flow controller calls; `paused` is librdkafka's view."""

    def __init__(self, parts: list[tuple[str, int]]) -> None:
        self.parts = [TopicPartition(t, p) for t, p in parts]
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return list(self.parts)

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in parts}

    def resume(self, parts: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in parts}

    def seek(self, p: TopicPartition) -> None:
        self.seeks.append((p.topic, p.partition, p.offset))


def _c(fake: FakeConsumer) -> Consumer:
    return cast(Consumer, cast(Any, fake))


def test_back_pressure_pauses_everything_and_signals_the_route_stage() -> None:
    full = threading.Event()
    fake = FakeConsumer([("email", 0), ("sms", 0)])
    flow = FlowController(full)
    flow.pause_all(_c(fake))
    assert fake.paused == {("email", 0), ("sms", 0)} and full.is_set()
    flow.resume_all(_c(fake))
    assert fake.paused == set() and not full.is_set()


def test_a_topic_at_its_bound_stays_paused_through_a_stage_wide_resume() -> None:
    fake = FakeConsumer([("email", 0), ("email", 1), ("sms", 0)])
    flow = FlowController()
    assert flow.limit_topics(_c(fake), {"email"}) == {"email"}
    assert fake.paused == {("email", 0), ("email", 1)}
    flow.pause_all(_c(fake))
    flow.resume_all(_c(fake))
    assert fake.paused == {("email", 0), ("email", 1)}, "still at its bound"
    assert flow.limit_topics(_c(fake), set()) == set()
    assert fake.paused == set()


def test_a_topic_at_its_bound_does_not_hold_an_in_process_route_stage_back() -> None:
    # Route can't know which channel its next events go to: held off by one full channel,
    # it would stop every other channel with it (tests/integration/test_provider_isolation).
    full = threading.Event()
    fake = FakeConsumer([("webhook", 0), ("email", 0)])
    flow = FlowController(full)
    flow.limit_topics(_c(fake), {"webhook"})
    assert not full.is_set()
    assert fake.paused == {("webhook", 0)}


def test_a_parked_partition_seeks_back_and_wakes_only_when_due() -> None:
    fake = FakeConsumer([("retry.10s", 0), ("email", 0)])
    flow = FlowController()
    flow.hold(_c(fake), ("retry.10s", 0), 42, due_ms=1_000)
    assert fake.seeks == [("retry.10s", 0, 42)] and fake.paused == {("retry.10s", 0)}
    assert flow.is_held(("retry.10s", 0))
    flow.pause_all(_c(fake))
    flow.resume_all(_c(fake))
    assert fake.paused == {("retry.10s", 0)}, "a stage-wide resume doesn't wake it early"
    assert flow.release_due(_c(fake), now_ms=999) == []
    assert flow.release_due(_c(fake), now_ms=1_000) == [("retry.10s", 0)]
    assert fake.paused == set() and not flow.is_held(("retry.10s", 0))


def test_partitions_assigned_while_full_join_the_paused_state() -> None:
    fake = FakeConsumer([("email", 0)])
    flow = FlowController()
    flow.pause_all(_c(fake))
    new = [TopicPartition("email", 1)]
    fake.parts += new
    flow.on_assign(_c(fake), new)
    assert ("email", 1) in fake.paused


def test_a_partition_paused_before_a_revoke_fetches_again_when_it_comes_back() -> None:
    # librdkafka keeps an application pause across revoke and reassignment.
    fake = FakeConsumer([("email", 0)])
    flow = FlowController()
    flow.hold(_c(fake), ("email", 0), 7, due_ms=10**15)
    assert flow.forget([("email", 0)]) == [("email", 0)]
    flow.on_assign(_c(fake), [TopicPartition("email", 0)])
    assert fake.paused == set()


def test_reset_forgets_everything_and_clears_the_signal() -> None:
    full = threading.Event()
    fake = FakeConsumer([("email", 0)])
    flow = FlowController(full)
    flow.pause_all(_c(fake))
    flow.limit_topics(_c(fake), {"email"})
    flow.hold(_c(fake), ("email", 0), 1, due_ms=10**15)
    flow.reset()
    assert not flow.paused and flow.held == [] and not full.is_set()
