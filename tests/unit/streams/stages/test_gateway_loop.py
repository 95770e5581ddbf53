"""The gateway's event loop: uvloop by default (gateway.event_loop), asyncio's on request."""

from __future__ import annotations

import asyncio
import threading

import uvloop

from schemas.settings import TidingsSettings
from streams.runtime.metrics import Metrics
from streams.runtime.stage import StageContext
from streams.stages.gateway import GatewayStage


def _stage(settings: TidingsSettings) -> GatewayStage:
    return GatewayStage(StageContext(settings, threading.Event(), Metrics()))


def test_the_gateway_runs_on_uvloop_by_default(settings: TidingsSettings) -> None:
    factory = _stage(settings)._loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_asyncio_s_own_loop_on_request(settings: TidingsSettings) -> None:
    gw = settings.gateway.model_copy(update={"event_loop": "asyncio"})
    assert _stage(settings.model_copy(update={"gateway": gw}))._loop_factory() is None
