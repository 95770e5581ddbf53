"""What the HTTP stages (`callbacks`, `gateway`) share: waiting for the migrations, then one
asyncio loop on the stage thread that serves an ASGI app on uvicorn until the stop event."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from streams.exceptions import FatalStageError, StageStopping
from streams.http.callbacks_producer import ACK_TIMEOUT_S, AckProducer
from streams.runtime.outage import Outage
from streams.runtime.stage import StageContext
from streams.state.db import wait_for_migrations

__all__ = ["HttpStage"]

log = logging.getLogger(__name__)

# uvicorn logs every WebSocket's accept, open and close at INFO on this logger: 30,000 lines
# for 10,000 Socket.IO clients connecting and leaving, nothing an operator acts on. Its
# warnings and errors still show; at DEBUG, everything does.
_UVICORN = logging.getLogger("uvicorn.error")


class HttpStage:
    """A stage serving HTTP: subclasses name themselves and write `_serve` (which returns
    once `self._stop` is set), usually with `_bind` and `_serve_app`."""

    name = "http"

    def __init__(self, ctx: StageContext) -> None:
        self._s = ctx.settings
        self._stop = ctx.stop
        self._metrics = ctx.metrics
        self._catalog = ctx.catalog

    def run(self) -> None:
        """Serve until `stop` is set; blocks. Waits out Postgres being down at start (bounded
        by `runtime.outage_limit_s`); raises FatalStageError as `_serve` does (a port taken,
        the Kafka producer failed fatally) or when the migrations are missing."""
        s = self._s
        pg = Outage(self.name, "postgres", limit_s=s.runtime.outage_limit_s,
                    metrics=self._metrics)  # fmt: skip
        try:
            wait_for_migrations(s.postgres.conninfo(), self.name, self._stop, pg)
        except StageStopping:
            return
        with asyncio.Runner(loop_factory=self._loop_factory()) as runner:
            runner.run(self._serve())

    def _loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """The event loop `_serve` runs on; None: asyncio's own."""
        return None

    async def _serve(self) -> None:
        raise NotImplementedError

    def _bind(self, host: str, port: int) -> socket.socket:
        """The listening socket, bound before anything starts (a taken port fails at once);
        raises FatalStageError naming the `<stage>.port` setting."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise FatalStageError(
                f"{self.name}: cannot listen on {host}:{port}: {exc}; "
                f"stop what uses the port or set {self.name}.port"
            ) from exc
        return sock

    async def _serve_app(self, app: Any, sock: socket.socket, producer: AckProducer) -> None:
        """Serve `app` on `sock` until the stop event; then uvicorn stops accepting and lets
        in-flight requests finish (bounded by the ack timeout: they may wait for Kafka).
        Raises FatalStageError when `producer` failed fatally or the server stopped."""
        config = uvicorn.Config(
            app,
            log_config=None,  # tidings' logging, not uvicorn's
            access_log=False,
            timeout_graceful_shutdown=int(ACK_TIMEOUT_S) + 5,
            lifespan="off",
            # permessage-deflate keeps a zlib stream per WebSocket (~93 KB each, measured:
            # 1.45 GB at 10,000 connections); the gateway's entries are small JSON.
            ws_per_message_deflate=False,
            # websockets' sans-I/O protocol (C masking), not wsproto's pure-Python framing.
            ws="websockets-sansio",
            # Engine.IO pings every connection itself (ping_interval 25 s): a WebSocket ping
            # too would be a second timer per connection, 10,000 more objects churning
            # through the young GC generation at 10,000 connections (docs/benchmarks.md).
            ws_ping_interval=None,
        )
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            _UVICORN.setLevel(logging.WARNING)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self.name}-http")
        try:
            while not self._stop.is_set() and not serving.done():
                self._metrics.beat(self.name)
                if producer.fatal is not None:
                    raise FatalStageError(
                        f"{self.name}: Kafka producer failed fatally: {producer.fatal.str()}"
                    )
                await asyncio.sleep(0.1)
            if serving.done() and not self._stop.is_set():
                serving.result()  # re-raises what stopped it
                raise FatalStageError(f"{self.name}: the HTTP server stopped on its own")
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            sock.close()
