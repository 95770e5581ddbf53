"""The Pacer: a token bucket that makes callers wait (in arrival order), driven by a fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest

from processors.pacing import Pacer


class FakeClock:
    """A clock that moves only when told; `sleep` records the wait and, if `advance`, moves it."""

    def __init__(self, advance: bool = True) -> None:
        self.now = 1000.0
        self.advance = advance
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.advance:
            self.now += seconds
        await asyncio.sleep(0)


def pacer(rate: float, burst: int | None = None, clock: FakeClock | None = None) -> Pacer:
    c = clock or FakeClock()
    return Pacer(rate, burst, clock=c, sleep=c.sleep)


def test_a_full_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    p = pacer(100, burst=10, clock=clock)

    async def go() -> list[float]:
        return [await p.acquire() for _ in range(30)]

    waits = asyncio.run(go())
    assert waits[:10] == [0.0] * 10
    assert all(math.isclose(w, 0.01) for w in waits[10:])
    # 30 sends at 100/s with a burst of 10: the last goes out 0.2 s after the first.
    assert math.isclose(clock.now - 1000.0, 0.2)


def test_the_rate_is_never_exceeded_over_any_second() -> None:
    clock = FakeClock()
    p = pacer(100, burst=100, clock=clock)
    sent: list[float] = []

    async def go() -> None:
        for _ in range(1000):
            await p.acquire()
            sent.append(clock.now)

    asyncio.run(go())
    for i, t in enumerate(sent):
        within = [s for s in sent[i:] if s < t + 1.0 - 1e-9]
        # A token bucket lets through at most burst + rate x t in any t seconds.
        assert len(within) <= 100 + 100
        if t - sent[0] >= 1.0:  # past the burst: the rate (plus the token at the window's edge)
            assert len(within) <= 100 + 1
    assert math.isclose(sent[-1] - sent[0], 9.0, abs_tol=0.02)


def test_concurrent_waiters_queue_in_arrival_order_without_a_race() -> None:
    clock = FakeClock(advance=False)
    p = pacer(10, burst=1, clock=clock)

    async def go() -> list[float]:
        return list(await asyncio.gather(*(p.acquire() for _ in range(5))))

    waits = asyncio.run(go())
    # One token at once, then one every 0.1 s: each waiter is promised its own slot.
    assert [round(w, 6) for w in waits] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock(advance=False)
    p = pacer(10, burst=3, clock=clock)
    assert [p.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 3600  # an hour idle: still only 3 tokens
    assert [p.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert math.isclose(p.reserve(), 0.1)


def test_backlog_says_how_long_a_new_caller_would_wait() -> None:
    clock = FakeClock(advance=False)
    p = pacer(4, burst=1, clock=clock)
    assert p.backlog_s == 0.0
    p.reserve()
    assert math.isclose(p.backlog_s, 0.25)
    p.reserve()
    assert math.isclose(p.backlog_s, 0.5)
    clock.now += 0.5
    assert math.isclose(p.backlog_s, 0.0, abs_tol=1e-12)


def test_a_cancelled_waiter_gives_its_token_back() -> None:
    clock = FakeClock(advance=False)
    gate = asyncio.Event()

    async def blocked_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        await gate.wait()

    p = Pacer(10, 1, clock=clock, sleep=blocked_sleep)

    async def go() -> float:
        assert await p.acquire() == 0.0
        task = asyncio.ensure_future(p.acquire())
        await asyncio.sleep(0)
        assert clock.sleeps == [pytest.approx(0.1)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return p.reserve()

    # The cancelled waiter's slot is free again: the next caller waits 0.1 s, not 0.2 s.
    assert math.isclose(asyncio.run(go()), 0.1)


def test_the_default_burst_is_one_seconds_worth() -> None:
    assert pacer(100).burst == 100
    assert pacer(0.5).burst == 1


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s must be a positive number"):
        Pacer(rate)


def test_a_burst_below_one_or_a_take_above_it_is_refused() -> None:
    with pytest.raises(ValueError, match="burst must be at least 1"):
        Pacer(10, 0)
    with pytest.raises(ValueError, match=r"between 1 and the burst \(2\)"):
        pacer(10, burst=2).reserve(3)


def test_the_real_clock_paces_too() -> None:
    p = Pacer(200, burst=1)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(11):
            await p.acquire()
        return loop.time() - t0

    assert asyncio.run(go()) >= 0.04  # 10 waits of 5 ms
