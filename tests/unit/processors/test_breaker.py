"""CircuitBreaker with a fake clock: opens on failure rate, probes half-open, closes."""

from __future__ import annotations

import pytest

from processors.breaker import BreakerConfig, CircuitBreaker

from .fakes import FakeClock

CFG = BreakerConfig(window_s=10, min_calls=4, failure_rate=0.5, open_for_s=5)


def test_stays_closed_below_min_calls_and_rate() -> None:
    b = CircuitBreaker("p", CFG, clock=FakeClock())
    for _ in range(3):
        b.failure()
    assert b.state == "closed"  # 3 < min_calls
    for _ in range(5):
        b.success()
    b.failure()
    assert b.state == "closed"  # 4 of 9 < 0.5
    assert b.failure_rate() == pytest.approx(4 / 9)
    b.failure()
    assert b.state == "open"  # 5 of 10 reaches the threshold


def test_opens_then_half_open_probe_closes() -> None:
    clock = FakeClock()
    b = CircuitBreaker("p", CFG, clock=clock)
    for _ in range(4):
        assert b.allow()
        b.failure()
    assert b.state == "open"
    assert not b.allow()
    assert b.retry_in() == pytest.approx(5.0)
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.2)
    assert b.state == "half_open"
    assert b.allow()  # the single probe
    assert not b.allow()  # others wait for its outcome
    b.success()
    assert b.state == "closed"
    assert b.failure_rate() == 0.0
    assert b.opened_count == 1


def test_failed_probe_reopens_and_cancelled_probe_frees_the_slot() -> None:
    clock = FakeClock()
    b = CircuitBreaker("p", CFG, clock=clock)
    for _ in range(4):
        b.failure()
    clock.advance(5)
    assert b.allow()
    b.cancelled()
    assert b.allow()
    b.failure()
    assert b.state == "open"
    assert b.retry_in() == pytest.approx(5.0)
    assert b.opened_count == 2


def test_old_failures_leave_the_window() -> None:
    clock = FakeClock()
    b = CircuitBreaker("p", CFG, clock=clock)
    for _ in range(3):
        b.failure()
    clock.advance(11)
    b.failure()
    assert b.state == "closed"  # the first three expired: 1 sample < min_calls
    assert b.failure_rate() == 1.0


def test_sample_memory_is_bounded() -> None:
    b = CircuitBreaker("p", BreakerConfig(max_samples=5, min_calls=100), clock=FakeClock())
    for _ in range(1000):
        b.failure()
        b.success()
    assert b.failure_rate() == pytest.approx(2 / 5)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        BreakerConfig(failure_rate=0)
