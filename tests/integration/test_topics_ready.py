"""A topic `ensure_topics` made is served at once: every record acked right after is in the log.

Before the wait, a loaded broker created the partition logs seconds after CreateTopics
returned; an idempotent producer's first batch failed there, a later one landed first, and
librdkafka acked the lost one implicitly (KAFKA-15591): acked events that no stage could ever
read (the quick-kill-route chaos failure of 2026-12-01).
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.settings import TidingsSettings
from streams.runtime.kafka import ensure_topics

pytestmark = pytest.mark.integration


def test_records_acked_right_after_topic_creation_are_all_in_the_log(
    settings: TidingsSettings, unique: str
) -> None:
    topic = f"test.ready.{unique}"
    assert ensure_topics(settings, {topic: 6}) == [topic]
    conf = settings.kafka.client_config()
    p = Producer({**conf, "enable.idempotence": True, "linger.ms": 1})
    acked: list[int] = []

    def report(err: object, msg: object) -> None:
        if err is None:
            acked.append(1)

    for i in range(600):
        p.produce(topic, str(i).encode(), partition=i % 6, on_delivery=report)
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": f"ready-{unique}"})
    try:
        stored = 0
        for part in range(6):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            stored += hi - lo
    finally:
        c.close()
    assert len(acked) == 600
    assert stored == 600, f"{600 - stored} acked record(s) missing from the log"
