"""Everything a stage process serves about itself, started and stopped in one place.

`ProcessObserver(settings, stages, health)` is built by `streams.app.run_stages`:
`start()` runs the dependency probe, serves `/metrics`, `/healthz` and `/readyz` on
`observe.host:observe.port` (nothing when the port is None), and writes the bound port to
`announce` when a supervisor asked for it (streams/observe/merge.py). `close()` stops both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Protocol

from prometheus_client import generate_latest

from schemas.settings import TidingsSettings
from streams.observe.metric_defs import BUILD, REGISTRY
from streams.observe.probes import DependencyProbe
from streams.observe.server import Checks, ObserveServer

__all__ = ["HealthSource", "ProcessObserver", "version"]

log = logging.getLogger(__name__)


class HealthSource(Protocol):
    """What the stages keep about their own health (streams.runtime.metrics.Metrics)."""

    def liveness(self, bound_s: float) -> tuple[bool, str]: ...

    def readiness(self) -> tuple[bool, str]: ...

    def also_down(self, source: Callable[[], list[str]]) -> None: ...


def version() -> str:
    """The installed tidings version ("unknown" from a bare checkout)."""
    try:
        return metadata.version("tidings")
    except metadata.PackageNotFoundError:
        return "unknown"


class ProcessObserver:
    """The probe and the HTTP server of one process; nothing starts before `start()`."""

    def __init__(
        self,
        settings: TidingsSettings,
        stages: Iterable[str],
        health: HealthSource,
        *,
        announce: Path | None = None,
        on_scrape: Iterable[Callable[[], None]] = (),
    ) -> None:
        self._s = settings
        self._health = health
        self._announce = announce
        self._on_scrape = tuple(on_scrape)
        self._probe = DependencyProbe(settings, stages)
        self._server: ObserveServer | None = None

    @property
    def url(self) -> str | None:
        """`http://host:port` of the server, None when serving nothing."""
        return self._server.url if self._server is not None else None

    def start(self) -> None:
        """Probe once (bounded), then serve; raises ObserveError if the port is taken."""
        BUILD.info({"version": version()})
        self._probe.start()
        self._health.also_down(self._probe.down)
        port = self._s.observe.port
        if port is None:
            return
        bound = self._s.observe.liveness_bound_s
        checks = Checks(
            live=lambda: self._health.liveness(bound),
            ready=self._health.readiness,
            metrics=self._metrics,
        )
        server = ObserveServer(self._s.observe.host, port, checks)
        server.start()
        self._server = server
        if self._announce is not None:
            tmp = self._announce.with_suffix(".tmp")
            tmp.write_text(str(server.port))
            os.replace(tmp, self._announce)  # whole or absent: the supervisor never reads half

    def _metrics(self) -> bytes:
        for hook in self._on_scrape:
            hook()
        return generate_latest(REGISTRY)

    def close(self) -> None:
        """Stop serving and probing. Idempotent."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._probe.close()
