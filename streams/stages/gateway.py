"""The `gateway` stage: the REST API (streams/http/gateway/) as a stage of `tidings run`.

It runs its own asyncio loop on the stage thread: uvicorn serving the FastAPI app on
`gateway.host:port`, an idempotent producer whose sends are awaited until the broker acks,
and the API-key store. On the stop event uvicorn stops accepting and lets in-flight
requests finish (bounded by the ack timeout), then the producer is flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streams.http.callbacks_producer import AckProducer
from streams.http.gateway import ApiKeyStore, GatewayDeps, InboxActions, Realtime, create_app
from streams.stages.http_stage import HttpStage
from streams.state import (
    AuditHistory,
    DeliveryLog,
    Directory,
    IdempotencyStore,
    Inbox,
    RateLimiter,
)

__all__ = ["GatewayStage"]

log = logging.getLogger(__name__)


class GatewayStage(HttpStage):
    """Serve the gateway until `stop` is set."""

    name = "gateway"

    def _loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        # uvloop's timers and transports are C: at 10,000 Socket.IO connections (a timer or
        # two each, replaced every ping and message) asyncio's Python timer heap was the
        # latency tail (docs/decisions/0013, docs/benchmarks.md).
        if self._s.gateway.event_loop == "uvloop":
            import uvloop  # a dependency; imported here, where it is used

            return uvloop.new_event_loop
        return None

    async def _serve(self) -> None:
        s = self._s
        sock = self._bind(s.gateway.host, s.gateway.port)
        producer = AckProducer(s, stage="gateway")
        await producer.start()
        conninfo, role = s.postgres.conninfo(), s.gateway.db_role
        keys = ApiKeyStore(conninfo, cache_s=s.gateway.key_cache_s, role=role)
        # Every read of a tenant's rows runs as `role` for that tenant (row-level security);
        # the deliveries the inbox's status events are built from are read as the login.
        deps = GatewayDeps(
            producer, keys, Directory(conninfo, name="gateway", role=role),
            AuditHistory(conninfo, role=role),
            InboxActions(s, producer, Inbox(conninfo, role=role), DeliveryLog(conninfo)),
            self._catalog,
            RateLimiter(s.redis.url.get_secret_value()) if s.gateway.rate_limit_per_s else None,
            IdempotencyStore(s.redis.url.get_secret_value()),
        )  # fmt: skip
        realtime = Realtime(s, deps.actions)
        app = create_app(s, deps)
        app.include_router(realtime.router())
        await realtime.start()
        log.info("gateway: listening on %s:%s", s.gateway.host, sock.getsockname()[1])

        try:
            await self._serve_app(realtime.asgi(app), sock, producer)
        finally:
            await realtime.close()
            await producer.close()
            await keys.close()
            deps.directory.close()
            await deps.history.close()
            await deps.actions.close()
            if deps.limiter is not None:
                await deps.limiter.close()
            if deps.idempotency is not None:
                await deps.idempotency.close()
