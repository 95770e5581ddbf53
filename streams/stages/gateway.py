"""The `gateway` stage: the REST API (streams/http/gateway/) as a stage of `tidings run`.

It runs its own asyncio loop on the stage thread: uvicorn serving the FastAPI app on
`gateway.host:port`, an idempotent producer whose sends are awaited until the broker acks,
and the API-key store. On the stop event uvicorn stops accepting and lets in-flight
requests finish (bounded by the ack timeout), then the producer is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn

from streams.exceptions import FatalStageError
from streams.http.callbacks_producer import ACK_TIMEOUT_S, AckProducer
from streams.http.gateway import ApiKeyStore, GatewayDeps, InboxActions, Realtime, create_app
from streams.stages.http_stage import HttpStage
from streams.state import AuditHistory, DeliveryLog, Directory, Inbox, RateLimiter

__all__ = ["GatewayStage"]

log = logging.getLogger(__name__)


class GatewayStage(HttpStage):
    """Serve the gateway until `stop` is set."""

    name = "gateway"

    def _bind(self) -> socket.socket:
        g = self._s.gateway
        family = socket.AF_INET6 if ":" in g.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((g.host, g.port))
        except OSError as exc:
            sock.close()
            raise FatalStageError(
                f"gateway: cannot listen on {g.host}:{g.port}: {exc}; "
                "stop what uses the port or set gateway.port"
            ) from exc
        return sock

    async def _serve(self) -> None:
        s = self._s
        sock = self._bind()  # bound before anything starts: a taken port fails at once
        producer = AckProducer(s, stage="gateway")
        await producer.start()
        keys = ApiKeyStore(s.postgres.conninfo(), cache_s=s.gateway.key_cache_s)
        conninfo = s.postgres.conninfo()
        deps = GatewayDeps(
            producer, keys, Directory(conninfo, name="gateway"), AuditHistory(conninfo),
            InboxActions(s, producer, Inbox(conninfo), DeliveryLog(conninfo)), self._catalog,
            RateLimiter(s.redis.url.get_secret_value()) if s.gateway.rate_limit_per_s else None,
        )  # fmt: skip
        realtime = Realtime(s, deps.actions)
        app = create_app(s, deps)
        app.include_router(realtime.router())
        await realtime.start()
        config = uvicorn.Config(
            realtime.asgi(app),
            log_config=None,  # tidings' logging, not uvicorn's
            access_log=False,
            timeout_graceful_shutdown=int(ACK_TIMEOUT_S) + 5,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="gateway-http")
        log.info("gateway: listening on %s:%s", s.gateway.host, sock.getsockname()[1])
        try:
            while not self._stop.is_set() and not serving.done():
                self._metrics.beat("gateway")
                if producer.fatal is not None:
                    raise FatalStageError(
                        f"gateway: Kafka producer failed fatally: {producer.fatal.str()}"
                    )
                await asyncio.sleep(0.1)
            if serving.done() and not self._stop.is_set():
                serving.result()  # re-raises what stopped it
                raise FatalStageError("gateway: the HTTP server stopped on its own")
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            sock.close()
            await realtime.close()
            await producer.close()
            await keys.close()
            deps.directory.close()
            await deps.history.close()
            await deps.actions.close()
            if deps.limiter is not None:
                await deps.limiter.close()
