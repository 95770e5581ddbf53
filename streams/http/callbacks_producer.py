"""An idempotent Kafka producer whose sends an asyncio caller can await until the broker acks.

The HTTP callbacks answer 200 only once their status event is durable in Kafka, so a send
must be awaitable. confluent-kafka's `produce()` only enqueues; the acknowledgement arrives
as a delivery callback served by `poll()`. A small task on the event loop calls `poll(0)`
(never blocking the loop): every millisecond while records are in flight, otherwise when a
send wakes it (and once a second, to serve error callbacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.settings import TidingsSettings
from streams.exceptions import StreamsError
from streams.runtime.kafka import make_producer
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import Out

__all__ = ["ACK_TIMEOUT_S", "AckProducer", "NotAcknowledgedError"]

log = logging.getLogger(__name__)

# librdkafka gives up on a record after this long (message.timeout.ms). Below Twilio's
# 15 s callback timeout, so the caller hears 503 (and may retry) rather than a timeout.
ACK_TIMEOUT_S = 10.0


class NotAcknowledgedError(StreamsError):
    """Kafka did not acknowledge a record (broker down, timeout, queue full); nothing was
    confirmed, so the caller should answer "try again later"."""


class AckProducer:
    """Produce single records and await their acknowledgement. Use from one event loop.

    Nothing connects before `start()`. `fatal` is set when the idempotent producer hit a fatal
    error (it cannot produce any more: the process must restart).
    """

    def __init__(
        self, settings: TidingsSettings, *, ack_timeout_s: float = ACK_TIMEOUT_S,
        stage: str = "callbacks",
    ) -> None:  # fmt: skip
        self._settings = settings
        self._ack_timeout_s = ack_timeout_s
        self._producer: Producer | None = None
        self._stage = stage
        self._counter = OutputCounter(stage, settings.topics)
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._in_flight = 0
        self.fatal: KafkaError | None = None

    async def start(self) -> None:
        """Create the producer and its poll task; the connection is made in the background."""
        extra: dict[str, Any] = {
            "message.timeout.ms": int(self._ack_timeout_s * 1000),
            "error_cb": self._on_error,
        }
        self._producer = make_producer(self._settings, **extra)
        self._poller = asyncio.create_task(self._serve(), name=f"{self._stage}-kafka-poll")

    async def send(self, out: Out) -> tuple[int, int]:
        """Produce `out` and return once the broker acknowledged it (acks=all): its
        (partition, offset).

        Raises NotAcknowledgedError when it was not acknowledged within the ack timeout,
        or could not be enqueued. Never blocks the event loop.
        """
        if self._producer is None:
            raise RuntimeError("AckProducer.send before start()")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # Served by poll() on the loop thread, or by flush() in an executor at shutdown.
            where = (msg.partition() or 0, msg.offset() or 0) if err is None else (-1, -1)
            loop.call_soon_threadsafe(_settle, fut, err, where)

        try:
            self._producer.produce(
                out.topic,
                value=out.value,
                key=out.key,
                headers=cast(Any, out.headers),
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as exc:
            raise NotAcknowledgedError(
                f"could not enqueue a record for {out.topic}: {exc}"
            ) from exc
        self._in_flight += 1
        self._wake.set()
        try:
            # The delivery callback always comes within message.timeout.ms; the margin
            # only guards against a stalled poll task.
            where = await asyncio.wait_for(fut, self._ack_timeout_s + 5.0)
        except TimeoutError as exc:
            raise NotAcknowledgedError(
                f"no acknowledgement from Kafka for {out.topic} within "
                f"{self._ack_timeout_s + 5.0:g} s"
            ) from exc
        finally:
            self._in_flight -= 1
        self._counter.produced([out])
        return where

    async def _serve(self) -> None:
        assert self._producer is not None
        while True:
            self._producer.poll(0)
            if self._in_flight:
                await asyncio.sleep(0.001)
            else:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.error("callbacks: Kafka producer failed fatally: %s", err.str())
        else:
            log.warning("callbacks: Kafka: %s", err.str())

    async def close(self, timeout_s: float = 10.0) -> int:
        """Stop polling and flush what is queued (in an executor); returns records not flushed."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._producer is None:
            return 0
        producer, self._producer = self._producer, None
        left: int = await asyncio.get_running_loop().run_in_executor(
            None, producer.flush, timeout_s
        )
        if left:
            log.warning("callbacks: %d status event(s) not flushed to Kafka at shutdown", left)
        return left


def _settle(fut: asyncio.Future[tuple[int, int]], err: Any, where: tuple[int, int]) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(where)
    else:
        fut.set_exception(NotAcknowledgedError(f"Kafka refused the record: {err}"))
