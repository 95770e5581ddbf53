"""Hot reload under load: the real route stage keeps routing while the catalog switches;
no event is lost and none is judged by a mix of versions."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from confluent_kafka import Consumer

from streams.runtime.metrics import Metrics
from streams.runtime.stage import StageContext
from streams.stages.route import RouteStage
from streams.state.catalog import CatalogRef
from tests.integration.pipeline import World, encode

EVENTS = 1200


def test_route_stage_switches_catalog_under_load(world: World) -> None:
    w = world
    rules_file = w.settings.catalog.path / "rules.yaml"
    original = rules_file.read_text()
    ref = CatalogRef.load(w.settings.catalog.path)
    stop = threading.Event()
    metrics = Metrics()
    stage = RouteStage(StageContext(w.settings, stop, metrics, catalog=ref))
    thread = threading.Thread(target=stage.run, name="route")
    thread.start()
    generations = {ref.current.version: "EUR"}
    try:
        producer = w.producer()
        for i in range(EVENTS):
            value, headers = encode(w.order_event(i), "structured")
            producer.produce(w.order_topic, value=value, headers=headers)
            if i % 300 == 299:  # switch while events are in flight
                producer.flush(30)
                # Let the stage reach this chunk first, so every version judges some events
                # whatever the machine's speed.
                deadline = time.monotonic() + 60
                while metrics.snapshot().get("events_in", 0) < i - 150:
                    assert time.monotonic() < deadline, "route stage made no progress in 60 s"
                    time.sleep(0.01)
                gen = f"G{i // 300}"
                currency = f"\"'{gen}'\""
                rules_file.write_text(
                    original.replace("\"event.data.?currency.orValue('EUR')\"", currency)
                )
                assert ref.reload() is True
                generations[ref.current.version] = gen
                time.sleep(0.05)
        assert producer.flush(30) == 0
        seen = read_dispatch(w, EVENTS)
    finally:
        stop.set()
        thread.join(60)
    per_event = Counter(n["event_id"] for n in seen)
    assert len(per_event) == EVENTS and set(per_event.values()) == {1}, "lost or duplicated"
    for n in seen:
        expected = generations[n["catalog_version"]]
        assert n["variables"]["currency"] == expected, "judged by a mix of versions"
    assert len({n["catalog_version"] for n in seen}) >= 3


def read_dispatch(w: World, n: int, timeout_s: float = 90.0) -> list[dict[str, object]]:
    consumer = Consumer(
        {
            **w.settings.kafka.client_config(),
            "group.id": f"check-{w.unique}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([w.settings.topics.dispatch("email")])
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    out.append(json.loads(msg.value()))
    finally:
        consumer.close()
    assert len(out) >= n, f"only {len(out)} of {n} notifications arrived"
    return out
