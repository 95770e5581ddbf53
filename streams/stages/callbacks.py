"""The `callbacks` stage: the provider-callback HTTP server as a stage of `tidings run`.

It runs its own asyncio loop on the stage thread: an aiohttp server on `callbacks.host:port`,
a delivery-log connection for lookups, the directory (one-click unsubscribe), and an
idempotent producer for status events and recipient changes. On the
stop event it stops accepting, lets in-flight requests finish (bounded), flushes the producer
and closes the database connection.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from streams.exceptions import FatalStageError
from streams.http.callbacks import callback_url_problems, redact
from streams.http.callbacks_app import CallbackHandlers
from streams.http.callbacks_producer import ACK_TIMEOUT_S, AckProducer
from streams.http.unsubscribe import UnsubscribeHandlers
from streams.stages.http_stage import HttpStage
from streams.state import DeliveryLog, Directory

__all__ = ["CallbacksStage"]

log = logging.getLogger(__name__)


class CallbacksStage(HttpStage):
    """Serve provider callbacks until `stop` is set."""

    name = "callbacks"

    async def _serve(self) -> None:
        s = self._s
        host, port = s.callbacks.host, s.callbacks.port
        deliveries = DeliveryLog(s.postgres.conninfo())
        directory = Directory(s.postgres.conninfo(), name="callbacks")
        producer = AckProducer(s)
        await producer.start()
        unsubscribe = UnsubscribeHandlers(s, directory, deliveries, producer, self._metrics)
        app = CallbackHandlers(s, deliveries, producer, self._metrics, unsubscribe).app()
        # In-flight requests may wait up to the ack timeout for Kafka: let them finish.
        runner = web.AppRunner(app, shutdown_timeout=ACK_TIMEOUT_S + 5.0)
        try:
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise FatalStageError(
                    f"callbacks: cannot listen on {host}:{port}: {exc}; "
                    "stop what uses the port or set callbacks.port"
                ) from exc
            log.info("callbacks: listening on %s:%s (public base %s)",
                     host, port, redact(s.callbacks.base_url()))  # fmt: skip
            for problem in callback_url_problems(s):
                log.warning("callbacks: %s", problem)
            while not self._stop.is_set():
                self._metrics.beat("callbacks")
                if producer.fatal is not None:
                    raise FatalStageError(
                        f"callbacks: Kafka producer failed fatally: {producer.fatal.str()}"
                    )
                await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()
            await producer.close()
            await deliveries.close()
            directory.close()
