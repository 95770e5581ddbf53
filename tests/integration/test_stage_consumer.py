"""StageConsumer against the real broker: a fatal consumer error can't be missed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from schemas.settings import TidingsSettings
from streams.exceptions import ConsumerFenced
from streams.runtime.kafka import make_consumer
from streams.runtime.member import MemberIdentity

pytestmark = pytest.mark.integration


def _until_assigned(c: Consumer, bound_s: float = 30.0) -> None:
    end = time.monotonic() + bound_s
    while not c.assignment():
        assert time.monotonic() < end, "no assignment within the bound"
        c.poll(0.2)


def test_a_static_member_fenced_by_a_twin_raises_on_every_later_call(
    settings: TidingsSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("fenced", 1)
    group = f"fenced-{uuid.uuid4().hex[:8]}"
    static = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"static_membership": True})}
    )
    me = MemberIdentity(group=group, instance=f"m-{uuid.uuid4().hex[:6]}", incarnation="1")
    first = make_consumer(static, group, me)
    first.subscribe([topic])
    _until_assigned(first)
    # The same group.instance.id joins again: the broker fences the older session, which
    # librdkafka reports once, as a fatal error through the error callback.
    twin = make_consumer(static, group, me)
    twin.subscribe([topic])
    try:
        _until_assigned(twin)
        end = time.monotonic() + 30
        with pytest.raises(ConsumerFenced, match="unusable"):
            while time.monotonic() < end:
                first.poll(0.2)
        # Not once: every call after that raises too, whichever the stage makes.
        with pytest.raises(ConsumerFenced):
            first.consume(10, 0)
        with pytest.raises(ConsumerFenced):
            first.poll(0)
    finally:
        twin.close()
        first.close()
