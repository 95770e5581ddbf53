"""Outage tracking: bounded backoff, one log line per state change, readiness, the bound."""

from __future__ import annotations

import logging
import random

import pytest

from streams.exceptions import FatalStageError
from streams.runtime.metrics import Metrics
from streams.runtime.outage import Outage, backoff_s


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    waits = [backoff_s(n, base_s=0.1, cap_s=2.0, rng=rng) for n in range(1, 200)]
    assert all(0 <= w <= 2.0 for w in waits)
    assert max(waits[:3]) <= 0.4  # 0.1, 0.2, 0.4 at most for the first three
    assert max(waits[20:]) > 1.0  # grows up to the cap


def test_one_line_per_state_change_and_readiness(caplog: pytest.LogCaptureFixture) -> None:
    metrics, clock = Metrics(), FakeClock()
    o = Outage("audit", "postgres", limit_s=None, metrics=metrics, clock=clock)
    assert metrics.ready()
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            o.failed(ConnectionError("refused"))
            clock.t += 1
        assert not metrics.ready() and metrics.down() == ["audit:postgres"]
        o.ok()
        o.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "postgres unreachable (ConnectionError: refused)" in lines[0]
    assert "back after 50.0 s" in lines[1]
    assert metrics.ready() and not o.down


def test_gives_up_only_past_its_bound() -> None:
    clock = FakeClock()
    o = Outage("deliver", "redis", limit_s=30, clock=clock)
    o.failed(OSError("down"))
    clock.t += 29
    o.failed(OSError("down"))  # within the bound: keep trying
    clock.t += 2
    with pytest.raises(FatalStageError, match=r"redis unreachable for 31 s.*bound of 30 s"):
        o.failed(OSError("down"))


def test_no_bound_rides_out_anything() -> None:
    clock = FakeClock()
    o = Outage("route", "kafka", limit_s=None, clock=clock)
    for _ in range(10):
        clock.t += 3600
        assert o.failed(OSError("down")) <= 5.0


def test_retry_waits_out_the_dependency_and_stops_on_request() -> None:
    import threading

    from streams.exceptions import DependencyDown, StageStopping

    o = Outage("audit", "postgres", limit_s=None, base_s=0.001, cap_s=0.002)
    tries = iter([DependencyDown("postgres", "down"), DependencyDown("postgres", "down"), None])

    def call() -> str:
        exc = next(tries)
        if exc is not None:
            raise exc
        return "written"

    assert o.retry(call, threading.Event()) == "written" and not o.down
    stop = threading.Event()
    stop.set()

    def always_down() -> None:
        raise DependencyDown("postgres", "down")

    with pytest.raises(StageStopping):
        o.retry(always_down, stop)
