"""poll_batch: the first record is waited for; then the batch fills until `fill_until`."""

from __future__ import annotations

from typing import Any

import pytest

from streams.runtime import stage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class ArrivingConsumer:
    """Records arrive one every `gap` seconds of the fake clock; consume() waits for them."""

    def __init__(self, clock: Clock, fetched: int, gap: float) -> None:
        self._clock = clock
        self._fetched = fetched  # already in the client's queue when poll returns
        self._gap = gap
        self._n = 0
        self.waits: list[float] = []

    def poll(self, timeout: float = -1) -> Any:
        self._n += 1
        return f"r{self._n}"

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        out: list[Any] = []
        while self._fetched and len(out) < num_messages:
            self._fetched -= 1
            self._n += 1
            out.append(f"r{self._n}")
        if timeout > 0:
            self.waits.append(timeout)
            # librdkafka returns when it has num_messages or the timeout is up.
            while len(out) < num_messages and timeout >= self._gap:
                self._clock.now += self._gap
                timeout -= self._gap
                self._n += 1
                out.append(f"r{self._n}")
            if len(out) < num_messages:
                self._clock.now += timeout
        return out


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(stage.time, "monotonic", c.monotonic)
    return c


def test_without_a_fill_instant_only_what_is_fetched_is_taken(clock: Clock) -> None:
    c = ArrivingConsumer(clock, fetched=3, gap=0.01)
    msgs = stage.poll_batch(c, 0.2, 500)  # type: ignore[arg-type]
    assert msgs == ["r1", "r2", "r3", "r4"]
    assert c.waits == []


def test_a_fill_instant_already_past_adds_no_wait(clock: Clock) -> None:
    c = ArrivingConsumer(clock, fetched=2, gap=0.01)
    msgs = stage.poll_batch(c, 0.2, 500, fill_until=clock.now - 5)  # type: ignore[arg-type]
    assert len(msgs) == 3
    assert c.waits == []


def test_the_batch_fills_with_arrivals_until_the_instant(clock: Clock) -> None:
    c = ArrivingConsumer(clock, fetched=1, gap=0.125)
    start = clock.now
    msgs = stage.poll_batch(c, 0.2, 500, fill_until=start + 0.5)  # type: ignore[arg-type]
    # 2 in hand, then one arrival every 125 ms for the 500 ms left.
    assert len(msgs) == 2 + 4
    assert c.waits == [0.5]
    assert clock.now == start + 0.5


def test_a_full_batch_stops_filling_early(clock: Clock) -> None:
    c = ArrivingConsumer(clock, fetched=1, gap=0.001)
    start = clock.now
    msgs = stage.poll_batch(c, 0.2, 10, fill_until=start + 0.5)  # type: ignore[arg-type]
    assert len(msgs) == 10
    assert clock.now < start + 0.5  # returned as soon as it was full


def test_nothing_to_poll_returns_empty_without_filling(clock: Clock) -> None:
    class Quiet(ArrivingConsumer):
        def poll(self, timeout: float = -1) -> Any:
            return None

    c = Quiet(clock, fetched=0, gap=0.01)
    assert stage.poll_batch(c, 0.2, 500, fill_until=clock.now + 1) == []  # type: ignore[arg-type]
    assert c.waits == []
