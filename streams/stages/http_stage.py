"""What the HTTP stages (`callbacks`, `gateway`) share: waiting for the migrations, then one
asyncio loop on the stage thread that serves until the stop event."""

from __future__ import annotations

import asyncio

from streams.exceptions import StageStopping
from streams.runtime.outage import Outage
from streams.runtime.stage import StageContext
from streams.state.db import wait_for_migrations

__all__ = ["HttpStage"]


class HttpStage:
    """A stage serving HTTP: subclasses name themselves and write `_serve` (which returns
    once `self._stop` is set)."""

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
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        raise NotImplementedError
