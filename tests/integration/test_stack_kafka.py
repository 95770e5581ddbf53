"""The local Kafka works with confluent-kafka: groups, commits, resume after restart."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, Producer

from schemas.settings import TidingsSettings


def _produce(settings: TidingsSettings, topic: str, values: list[str]) -> None:
    p = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, key=str(i % 7).encode(), value=v.encode())
    assert p.flush(30) == 0


def _consumer(settings: TidingsSettings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _take(c: Consumer, n: int, deadline_s: float = 30.0) -> list[Message]:
    got: list[Message] = []
    end = time.monotonic() + deadline_s
    while len(got) < n and time.monotonic() < end:
        for m in c.consume(num_messages=n - len(got), timeout=0.5):
            assert m.error() is None, m.error()
            got.append(m)
    return got


def test_group_commit_and_resume_after_restart(
    settings: TidingsSettings, make_topic: Callable[..., str], unique: str
) -> None:
    topic = make_topic("resume", partitions=3)
    group = f"test-group-{unique}"
    values = [f"v{i}" for i in range(60)]
    _produce(settings, topic, values)

    first = _consumer(settings, group)
    first.subscribe([topic])
    taken = _take(first, 25)
    assert len(taken) == 25
    # Commit exactly what was processed, synchronously, then "crash" (close without more).
    first.commit(asynchronous=False)
    first.close()

    second = _consumer(settings, group)
    second.subscribe([topic])
    rest = _take(second, 35)
    second.commit(asynchronous=False)
    extra = second.consume(num_messages=10, timeout=2.0)
    second.close()

    seen = [m.value().decode() for m in taken + rest]
    assert extra == []
    assert sorted(seen) == sorted(values), "the restarted consumer resumed at the committed offset"


def test_uncommitted_messages_are_redelivered(
    settings: TidingsSettings, make_topic: Callable[..., str], unique: str
) -> None:
    topic = make_topic("redeliver", partitions=1)
    group = f"test-group-{unique}"
    _produce(settings, topic, [f"m{i}" for i in range(10)])

    c = _consumer(settings, group)
    c.subscribe([topic])
    batch = _take(c, 10)
    c.commit(message=batch[3], asynchronous=False)  # offsets 0..3 done, 4..9 not
    c.close()

    c2 = _consumer(settings, group)
    c2.subscribe([topic])
    again = _take(c2, 6)
    c2.close()
    assert [m.offset() for m in again] == list(range(4, 10))
