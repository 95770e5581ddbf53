"""The flow controller: which of a stage's partitions fetch, and why the others don't.

Three reasons hold a partition back, and it fetches only when none applies:

- **back-pressure**: the whole stage is full (`pause_all`); an in-process route stage
  sees it through `deliver_full`;
- **a topic at its in-flight bound** (`limit_topics`), so one slow channel can't take
  every in-flight slot. This alone does not hold an in-process route stage back: route
  can't know which channel its next events go to, and held off by one full channel it
  would stop all the others with it;
- **a parked partition** whose head record is not due yet (`hold`, `release_due`): a
  retry tier today, the scheduler's timers next.

Only the consumer's pause/resume/seek are called; nothing blocks. librdkafka keeps an
application pause across a revoke and a reassignment, so `on_assign` pauses what must
stay paused and resumes the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from streams.runtime.records import TP

__all__ = ["FlowController"]


class FlowController:
    """Pause/resume bookkeeping for one consumer; not thread-safe (the stage loop owns it)."""

    def __init__(self, deliver_full: threading.Event | None = None) -> None:
        self._signal = deliver_full
        self.paused = False  # back-pressure: the whole stage
        self._full: set[str] = set()  # topics at their in-flight bound
        self._held: dict[TP, float] = {}  # parked partition → when its head is due (epoch ms)
        self._assigned: set[TP] = set()  # for `paused_count` only

    # ------------------------------------------------------------ back-pressure

    def pause_all(self, consumer: Consumer) -> None:
        """The stage is full: pause every assigned partition (idempotent)."""
        if not self.paused:
            consumer.pause(consumer.assignment())
            self.paused = True
            if self._signal is not None:
                self._signal.set()

    def resume_all(self, consumer: Consumer) -> None:
        """The stage has room again: resume what nothing else holds back (idempotent)."""
        if self.paused:
            self.paused = False
            self.wake(consumer, [(p.topic, p.partition) for p in consumer.assignment()])
            if self._signal is not None:
                self._signal.clear()

    # ------------------------------------------------------------ per-topic bounds

    def limit_topics(self, consumer: Consumer, full: set[str]) -> set[str]:
        """Pause the topics in `full`, resume those that left it; returns the newly full."""
        if full == self._full:
            return set()
        added, freed = full - self._full, self._full - full
        self._full = set(full)
        parts = consumer.assignment()
        if added:
            consumer.pause([p for p in parts if p.topic in added])
        self.wake(consumer, [(p.topic, p.partition) for p in parts if p.topic in freed])
        return added

    # ------------------------------------------------------------ parked partitions

    def is_held(self, tp: TP) -> bool:
        """Whether `tp` is parked (its fetched records are dropped: fetched again later)."""
        return tp in self._held

    def hold(self, consumer: Consumer, tp: TP, offset: int, due_ms: float) -> None:
        """Park `tp` at `offset` until `due_ms` (epoch ms): seek back to it and pause."""
        consumer.seek(TopicPartition(tp[0], tp[1], offset))
        consumer.pause([TopicPartition(tp[0], tp[1])])
        self._held[tp] = due_ms

    def release_due(self, consumer: Consumer, now_ms: float) -> list[TP]:
        """Resume the parked partitions that are due at `now_ms`; returns them."""
        if not self._held:
            return []
        due = [tp for tp, at in self._held.items() if at <= now_ms]
        for tp in due:
            del self._held[tp]
        self.wake(consumer, due)
        return due

    @property
    def paused_count(self) -> int:
        """How many assigned partitions are paused (whole stage, full topic or parked).

        Read by the metrics scrape from another thread: a racy but safe snapshot.
        """
        assigned = list(self._assigned)
        if self.paused:
            return len(assigned)
        full, held = self._full, self._held
        return sum(1 for tp in assigned if tp[0] in full or tp in held)

    @property
    def held(self) -> list[TP]:
        """The parked partitions."""
        return list(self._held)

    # ------------------------------------------------------------ rebalances

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Newly assigned partitions join the state the stage is in."""
        self._assigned.update((p.topic, p.partition) for p in parts)
        if self.paused:
            consumer.pause(parts)
            return
        stay = [p for p in parts if p.topic in self._full]
        if stay:
            consumer.pause(stay)
        # A partition we paused, lost and got back would otherwise never fetch again.
        self.wake(consumer, [(p.topic, p.partition) for p in parts])

    def forget(self, tps: Iterable[TP]) -> list[TP]:
        """Stop tracking `tps` (revoked or lost); returns those that were parked."""
        tps = list(tps)
        self._assigned.difference_update(tps)
        return [tp for tp in tps if self._held.pop(tp, None) is not None]

    def reset(self) -> None:
        """A new consumer: nothing is paused, nothing parked."""
        self.paused, self._full, self._held, self._assigned = False, set(), {}, set()
        if self._signal is not None:
            self._signal.clear()

    def wake(self, consumer: Consumer, tps: list[TP]) -> None:
        """Resume those of `tps` nothing holds back (stage paused, parked, topic full)."""
        if self.paused:
            return
        run = [
            TopicPartition(t, p) for t, p in tps if (t, p) not in self._held and t not in self._full
        ]
        if run:
            consumer.resume(run)
