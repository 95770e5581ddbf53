"""Run one or more stages in one process, each on its own thread, until SIGINT/SIGTERM.

`tidings run` runs them all (local use; `callbacks`, the provider-callback HTTP
server, only when `callbacks.enabled`); `tidings run --stage X` runs one, the
unit an operator scales. A stage that fails fatally stops the whole process
with exit code 1, so a supervisor restarts it from the committed offsets.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from schemas.settings import TidingsSettings
from streams.runtime.metrics import Metrics
from streams.runtime.stage import SendHook, Stage, StageContext
from streams.state.catalog import CatalogRef

__all__ = ["STAGES", "default_stages", "run_stages"]

log = logging.getLogger(__name__)

# Every stage `--stage` accepts. `tidings run` without --stage runs `default_stages(settings)`.
STAGES = ("route", "deliver", "audit", "callbacks")


def default_stages(settings: TidingsSettings) -> tuple[str, ...]:
    """The stages `tidings run` runs when none is named: all, callbacks only when enabled."""
    return tuple(n for n in STAGES if n != "callbacks" or settings.callbacks.enabled)


def _build(name: str, ctx: StageContext) -> Stage:
    if name == "route":
        from streams.stages.route import RouteStage

        return RouteStage(ctx)
    if name == "deliver":
        from streams.stages.deliver import DeliverStage

        return DeliverStage(ctx)
    if name == "audit":
        from streams.stages.audit import AuditStage

        return AuditStage(ctx)
    if name == "callbacks":
        from streams.stages.callbacks import CallbacksStage

        return CallbacksStage(ctx)
    raise ValueError(f"unknown stage {name!r}; use one of {', '.join(STAGES)}")


def run_stages(
    settings: TidingsSettings,
    stages: tuple[str, ...] | None = None,
    *,
    stop: threading.Event | None = None,
    metrics: Metrics | None = None,
    on_tick: Callable[[Metrics], None] | None = None,
    tick_s: float = 1.0,
    send_hook: SendHook | None = None,
) -> int:
    """Run `stages` until stopped; returns the exit code (0 clean, 1 a stage failed). Blocks.

    `stages` None means `default_stages(settings)`. `send_hook`: tests only (fault injection).
    """
    if stages is None:
        stages = default_stages(settings)
    stop = stop or threading.Event()
    metrics = metrics or Metrics()
    ref = _catalog(settings) if {"route", "deliver"} & set(stages) else None
    errors: list[BaseException] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping (finishing in-flight work, committing)", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def guard(stage: Stage) -> None:
        try:
            stage.run()
        except BaseException as exc:
            log.error("stage %s failed: %s", stage.name, exc, exc_info=exc)
            errors.append(exc)
            stop.set()

    # Route and deliver in one process: route waits while deliver is full (back-pressure).
    full = threading.Event() if {"route", "deliver"} <= set(stages) else None
    ctx = StageContext(settings, stop, metrics, catalog=ref, deliver_full=full, send_hook=send_hook)
    # Daemon threads: a stage wedged in a client call (the broker gone for good) must not
    # keep the process alive past the stop bound below.
    threads = [
        threading.Thread(
            target=guard, args=(_build(n, ctx),), name=n,
            daemon=True,
        )
        for n in stages
    ]  # fmt: skip
    for t in threads:
        t.start()
    next_tick = time.monotonic() + tick_s
    # Draining, the final commit (retried for up to another drain bound), the deliver
    # worker finishing its provider calls (a third), and closing.
    bound_s = 3 * settings.runtime.drain_timeout_s + 20
    stopped_at: float | None = None
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
            if on_tick is not None and time.monotonic() >= next_tick:
                on_tick(metrics)
                next_tick += tick_s
            if stop.is_set():
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > bound_s:
                    left = [t.name for t in threads if t.is_alive()]
                    log.error(
                        "stage(s) %s did not stop within %.0f s; exiting anyway (their "
                        "unfinished work is redone from the committed offsets)",
                        ", ".join(left), bound_s,
                    )  # fmt: skip
                    return 1
    finally:
        if ref is not None:
            ref.stop()
    return 1 if errors else 0


def _catalog(settings: TidingsSettings) -> CatalogRef:
    """The catalog for this process, following its source for hot reload."""
    c = settings.catalog
    if c.follow_topic:
        ref = CatalogRef.from_topic(settings, c.follow_topic, c.follow_key)
        ref.follow(settings, c.follow_topic, c.follow_key)
        return ref
    ref = CatalogRef.load(c.path)
    if c.watch_interval_s > 0:
        ref.start_watch(c.watch_interval_s)
    return ref
