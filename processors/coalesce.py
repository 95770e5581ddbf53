"""Group calls: the calls made while one round trip runs ride the next one, together.

The deliver stage asks Redis the same kind of question once per notification (claim it,
mark it sent), and a provider may store one row per send (the in-app inbox). One round
trip per question costs a socket write, a read and an event-loop wake-up each; a
`Coalescer` turns every call made in one event-loop iteration (and every call made while
the previous batch was on the wire) into one batch call: one pipeline, one round trip.
Under load batches grow by themselves; alone, a call waits one loop iteration more than
it would have.

Pure asyncio, no I/O of its own: the batch call is passed in. It lives here, in the lower
package, so that providers and the stage runtime (`streams.state.claims`) share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

A = TypeVar("A")
R = TypeVar("R")


class Coalescer(Generic[A, R]):
    """`await c(arg)` → the result for `arg` of one `run(args)` call over a batch of args.

    `run` returns one result per arg, in order; a result that is an exception is raised to
    that caller only. An exception raised by `run` itself is raised to every caller of the
    batch. At most one batch is in flight; at most `max_batch` args go in one. Callers that
    are cancelled are skipped when results come back. Never blocks the loop.
    """

    def __init__(
        self, run: Callable[[list[A]], Awaitable[list[R | BaseException]]], max_batch: int = 500
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self._max = max_batch
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, arg: A) -> R:
        return await self.submit(arg)

    def submit(self, arg: A) -> asyncio.Future[R]:
        """Queue `arg` for the next batch and return its result's future, without awaiting.

        For a caller with other work to start first: no task of its own per call (a future
        already done when awaited costs no event-loop wake-up). Must be called on the loop.
        """
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((arg, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the calls of this loop iteration join the first batch
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._run([a for a, _ in batch])
            except BaseException as exc:  # every caller hears it; the flusher goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            if len(results) != len(batch):
                err = RuntimeError(f"batch call returned {len(results)} results for {len(batch)}")
                results = [err] * len(batch)
            for (_, fut), r in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(r, BaseException):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)

    async def close(self) -> None:
        """Wait for the batch in flight and what is queued behind it; never raises."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
