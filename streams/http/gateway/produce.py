"""Producing a request's records and answering only once Kafka acknowledged all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from streams.http.callbacks_producer import AckProducer, NotAcknowledgedError
from streams.http.gateway.problems import Problem
from streams.runtime.records import Out

__all__ = ["produce_acked"]


async def produce_acked(
    producer: AckProducer, outs: Sequence[Out], then: str
) -> list[tuple[int, int]]:
    """Produce `outs` concurrently; their (partition, offset) once every one was acked.

    Raises Problem 503 (with Retry-After and `then`, what the client should do) when Kafka
    did not acknowledge some; re-raises anything else (a bug: the app answers 500).
    """
    results = await asyncio.gather(*(producer.send(o) for o in outs), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        if not all(isinstance(r, NotAcknowledgedError) for r in failed):
            raise failed[0]
        raise Problem(
            503,
            "Kafka unavailable",
            f"{len(failed)} of {len(outs)} record(s) not acknowledged ({failed[0]}); {then}",
            headers={"Retry-After": "5"},
        )
    return [r for r in results if not isinstance(r, BaseException)]
