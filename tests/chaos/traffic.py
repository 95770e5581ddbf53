"""Kafka traffic of a chaos run: the event producer (with poison) and the committed readers.

The producer paces events over a duration and records each as the notification it must become
once the broker acknowledged it; the readers follow a topic from its beginning with
isolation.level=read_committed (assigned partitions, no group: a broker bounce costs them only
a reconnect) and keep every record with its partition and offset.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tests.chaos.history import Expected, Poison, Status

__all__ = ["EventSource", "Reader", "poison_shape", "status_of"]

# i → (topic, value, headers, the notification it must become | None, poison shape | None)
# Outages are the point here: librdkafka's per-connection complaints would bury the report.
QUIET = {"log_level": 0}

Maker = Callable[
    [int], tuple[str, bytes | None, list[tuple[str, bytes]], Expected | None, str | None]
]


def poison_shape(rng: random.Random, i: int, source: str) -> tuple[str, bytes | None]:
    """One record no stage can turn into a notification: (shape, value)."""
    ce = {"specversion": "1.0", "id": f"poison-{i}", "type": "order.created", "source": source}
    head = json.dumps(ce)[:-1]
    shapes: list[tuple[str, bytes | None]] = [
        ("deep-nesting", (head + ', "data": ' + "[" * 20000 + "]" * 20000 + "}").encode()),
        ("tombstone", None),
        ("garbage-bytes", rng.randbytes(64)),
        ("truncated-json", json.dumps({**ce, "data": {"total": 1}}).encode()[:40]),
        ("not-an-object", b"[1, 2, 3]"),
        ("invalid-utf8", b'{"specversion": "1.0", "id": "\xff\xfe", "type": "order.created"}'),
        ("unknown_type", json.dumps({**ce, "type": "chaos.nobody.listens", "data": {}}).encode()),
        ("huge-number", (head + ', "data": {"total": 1' + "0" * 5000 + "}}").encode()),
    ]
    return shapes[i % len(shapes)]


class EventSource:
    """Produces `n` records over `duration_s` on a thread; `expected` and `poison` fill up."""

    def __init__(self, kafka: dict[str, Any], make: Maker, n: int, duration_s: float,
                 start: int = 0) -> None:  # fmt: skip
        self._p = Producer({**kafka, **QUIET, "enable.idempotence": True, "linger.ms": 5,
                            "message.timeout.ms": 300000})  # fmt: skip
        self._make, self._n, self._duration, self._start = make, n, duration_s, start
        self.expected: list[Expected] = []
        self.poison: list[Poison] = []
        self.failed: list[str] = []  # produce errors: these events are not expected
        self.produced = 0  # calls to produce()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> EventSource:
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        for k in range(self._n):
            i = self._start + k
            topic, value, headers, exp, shape = self._make(i)

            def done(err: Any, msg: Any, exp: Expected | None = exp, shape: str | None = shape,
                     i: int = i) -> None:  # fmt: skip
                with self._lock:
                    if err is not None:
                        self.failed.append(f"{i}: {err}")
                    elif exp is not None:
                        self.expected.append(Expected(exp.event_id, exp.nid, exp.channel,
                                                      time.time()))  # fmt: skip
                    else:
                        where = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
                        self.poison.append(Poison(where, shape or "?", time.time()))

            self._p.produce(topic, value=value, headers=headers, on_delivery=done)
            self.produced += 1
            self._p.poll(0)
            due = t0 + (k + 1) * self._duration / self._n
            while (pause := due - time.monotonic()) > 0:  # poll() returns early on callbacks
                self._p.poll(min(pause, 0.05))
        self._p.flush(300)

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def acked(self) -> int:
        with self._lock:
            return len(self.expected) + len(self.poison)


def status_of(msg: Any) -> Status | None:
    """The Status of one status-topic record; None when it isn't a status event."""
    try:
        doc = json.loads(msg.value())
        d = doc["data"]
        return Status(d["notification_id"], d["status"], doc["id"], msg.partition(),
                      msg.offset(), bool(d.get("possible_duplicate")), time.time())  # fmt: skip
    except (ValueError, KeyError, TypeError):
        return None


class Reader:
    """Follows every partition of `topic` from the beginning, read_committed, on a thread."""

    def __init__(self, kafka: dict[str, Any], topic: str, partitions: int,
                 keep: Callable[[Any], Any]) -> None:  # fmt: skip
        parts = range(partitions)  # metadata of a topic made a moment ago may still be empty
        self._c = Consumer({**kafka, **QUIET, "group.id": f"chaos-reader-{topic}",
                            "isolation.level": "read_committed", "enable.auto.commit": False,
                            "enable.partition.eof": False})  # fmt: skip
        self._c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._keep = keep
        self.items: list[Any] = []
        self.last_t = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._c.consume(500, 0.2):
                if m.error() is None:
                    item = self._keep(m)
                    if item is not None:
                        self.items.append(item)
                    self.last_t = time.monotonic()

    def settle(self, idle_s: float = 3.0, timeout_s: float = 30.0) -> None:
        """Wait until nothing new arrived for `idle_s` from now on (bounded by `timeout_s`)."""
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() - max(self.last_t, start) < idle_s and time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._c.close()
