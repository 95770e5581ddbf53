"""The Coalescer: calls of one loop iteration ride one batch; errors reach their callers."""

from __future__ import annotations

import asyncio

import pytest

from processors.coalesce import Coalescer


class _Batches:
    """A fake batch call that records every batch and answers x * 10 (or raises on 'boom')."""

    def __init__(self, fail_all: bool = False) -> None:
        self.seen: list[list[int]] = []
        self.fail_all = fail_all
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, args: list[int]) -> list[int | BaseException]:
        self.seen.append(list(args))
        await self.gate.wait()
        if self.fail_all:
            raise ConnectionError("down")
        return [ValueError(f"bad {a}") if a < 0 else a * 10 for a in args]


def test_calls_of_one_iteration_are_one_batch_in_order() -> None:
    async def go() -> tuple[list[int], list[list[int]]]:
        b = _Batches()
        c: Coalescer[int, int] = Coalescer(b)
        got = await asyncio.gather(*(c(i) for i in range(5)))
        return list(got), b.seen

    got, seen = asyncio.run(go())
    assert got == [0, 10, 20, 30, 40]
    assert seen == [[0, 1, 2, 3, 4]]


def test_calls_made_while_a_batch_is_in_flight_ride_the_next_one() -> None:
    async def go() -> list[list[int]]:
        b = _Batches()
        b.gate.clear()
        c: Coalescer[int, int] = Coalescer(b)
        first = asyncio.gather(c(1), c(2))
        await asyncio.sleep(0.01)  # the first batch is on the wire
        later = asyncio.gather(c(3), c(4), c(5))
        await asyncio.sleep(0.01)
        b.gate.set()
        await first
        await later
        return b.seen

    assert asyncio.run(go()) == [[1, 2], [3, 4, 5]]


def test_a_per_arg_error_reaches_its_caller_only() -> None:
    async def go() -> list[object]:
        c: Coalescer[int, int] = Coalescer(_Batches())
        return list(await asyncio.gather(c(1), c(-1), c(2), return_exceptions=True))

    ok1, bad, ok2 = asyncio.run(go())
    assert (ok1, ok2) == (10, 20)
    assert isinstance(bad, ValueError) and "bad -1" in str(bad)


def test_a_failed_batch_call_reaches_every_caller_and_the_next_batch_still_runs() -> None:
    async def go() -> tuple[list[object], int]:
        b = _Batches(fail_all=True)
        c: Coalescer[int, int] = Coalescer(b)
        failed = await asyncio.gather(c(1), c(2), return_exceptions=True)
        b.fail_all = False
        return list(failed), await c(3)

    failed, after = asyncio.run(go())
    assert all(isinstance(e, ConnectionError) for e in failed) and len(failed) == 2
    assert after == 30


def test_batches_are_bounded_and_a_cancelled_caller_is_skipped() -> None:
    async def go() -> tuple[list[list[int]], list[int]]:
        b = _Batches()
        c: Coalescer[int, int] = Coalescer(b, max_batch=2)
        gone = asyncio.ensure_future(c(99))
        kept = [asyncio.ensure_future(c(i)) for i in range(3)]
        await asyncio.sleep(0)  # all four are queued, the flusher not yet run
        gone.cancel()
        got = [await k for k in kept]
        await c.close()
        return b.seen, got

    seen, got = asyncio.run(go())
    assert seen == [[99, 0], [1, 2]]
    assert got == [0, 10, 20]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(_Batches(), max_batch=0)


def test_submitted_futures_join_the_awaited_calls_batch_and_close_flushes_them() -> None:
    async def go() -> tuple[list[int], list[list[int]], str]:
        b = _Batches()
        c: Coalescer[int, int] = Coalescer(b)
        early = c.submit(1)  # not awaited by anyone yet
        bad = c.submit(-1)
        got = await c(2)
        await c.close()  # nothing is left pending
        assert early.done() and bad.done()
        with pytest.raises(ValueError, match="bad -1"):
            bad.result()
        return [early.result(), got], b.seen, type(bad.exception()).__name__

    got, seen, err = asyncio.run(go())
    assert got == [10, 20]
    assert seen == [[1, -1, 2]]
    assert err == "ValueError"
