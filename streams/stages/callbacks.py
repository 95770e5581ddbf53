"""The `callbacks` stage: the provider-callback HTTP server as a stage of `tidings run`.

It runs its own asyncio loop on the stage thread: the callbacks' FastAPI app on uvicorn at
`callbacks.host:port` (the gateway's HTTP stack, decisions/0013), a delivery-log connection
for lookups, the directory (one-click unsubscribe), and an idempotent producer for status
events and recipient changes. On the stop event it stops accepting, lets in-flight requests
finish (bounded), flushes the producer and closes the database connection.
"""

from __future__ import annotations

import logging

from streams.http.callbacks import callback_url_problems, redact
from streams.http.callbacks_app import CallbackHandlers
from streams.http.callbacks_producer import AckProducer
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
        sock = self._bind(host, port)
        deliveries = DeliveryLog(s.postgres.conninfo())
        directory = Directory(s.postgres.conninfo(), name="callbacks")
        producer = AckProducer(s)
        await producer.start()
        unsubscribe = UnsubscribeHandlers(s, directory, deliveries, producer, self._metrics)
        app = CallbackHandlers(s, deliveries, producer, self._metrics, unsubscribe).app()
        log.info("callbacks: listening on %s:%s (public base %s)",
                 host, sock.getsockname()[1], redact(s.callbacks.base_url()))  # fmt: skip
        for problem in callback_url_problems(s):
            log.warning("callbacks: %s", problem)

        try:
            await self._serve_app(app, sock, producer)
        finally:
            await producer.close()
            await deliveries.close()
            directory.close()
