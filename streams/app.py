"""Run stages until SIGINT/SIGTERM: in this process as threads, or planned as processes.

`run_stages` runs one or more stages in one process, each on its own thread. `tidings run`
runs them all (local use; `callbacks`, the provider-callback HTTP server, only when
`callbacks.enabled`); `tidings run --stage X` runs one, the unit an operator scales. A
stage that fails fatally stops the whole process with exit code 1, so a supervisor
restarts it from the committed offsets.

`plan_processes` decides how many OS processes one `tidings run` becomes (one per stage
unless `--threads`, times `--workers`); `streams.runtime.workers.supervise` runs them.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from schemas.settings import TidingsSettings
from streams.observe import ObserveError, ProcessObserver, Tracing
from streams.observe.metric_defs import CATALOG
from streams.observe.metric_defs import disable as disable_metrics
from streams.runtime.heap import HeapFreezer, start_pause_metrics, stop_pause_metrics
from streams.runtime.metrics import Metrics
from streams.runtime.stage import SendHook, Stage, StageContext
from streams.state.catalog import CatalogRef

__all__ = [
    "MAX_WORKERS",
    "STAGES",
    "Unit",
    "default_stages",
    "for_worker",
    "plan_processes",
    "run_stages",
    "stop_bound_s",
]

log = logging.getLogger(__name__)

# Every stage `--stage` accepts. `tidings run` without --stage runs `default_stages(settings)`.
STAGES = ("route", "deliver", "audit", "recipients", "callbacks", "gateway")
# Stages that serve one HTTP port: one process each per host.
HTTP_STAGES = ("callbacks", "gateway")


def default_stages(settings: TidingsSettings) -> tuple[str, ...]:
    """The stages `tidings run` runs when none is named: all, the HTTP ones when enabled."""
    enabled = {"callbacks": settings.callbacks.enabled, "gateway": settings.gateway.enabled}
    return tuple(n for n in STAGES if enabled.get(n, True))


# `--workers` at most: more members than partitions only sit idle (docs/operations.md).
MAX_WORKERS = 64


@dataclass(frozen=True)
class Unit:
    """One process of a `tidings run`: the stages it runs as threads, and which worker it is."""

    stages: tuple[str, ...]
    index: int = 0  # 0 .. count-1 among the processes running the same stages
    count: int = 1

    @property
    def name(self) -> str:
        """`deliver`, `deliver#1`, `route+deliver#0`: for logs."""
        base = "+".join(self.stages)
        return base if self.count == 1 else f"{base}#{self.index}"


def plan_processes(stages: tuple[str, ...], *, workers: int = 1, threads: bool = False,
                   named: bool = True) -> list[Unit]:  # fmt: skip
    """The processes `tidings run` runs: pure; raises ValueError naming the flag at fault.

    Default: every stage its own process (no shared GIL), `workers` of each. `threads`: one
    process running all `stages` as threads (the in-process mode), `workers` of those.
    `callbacks` and `gateway` serve one HTTP port, so they never get more than one process:
    asked for explicitly (`named`) with `workers` > 1, that is an error; in the default set
    it runs once. One unit means: run it in this process, no supervisor.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be 1..{MAX_WORKERS}, got {workers}")
    http = [st for st in stages if st in HTTP_STAGES]
    if workers > 1 and http and (named or threads):
        raise ValueError(
            f"--workers > 1 with the {http[0]} stage: it serves one HTTP port, so run one "
            f"{http[0]} process per host (`tidings run --stage {http[0]}`)"
        )
    if threads:
        return [Unit(stages, i, workers) for i in range(workers)]
    units: list[Unit] = []
    for st in stages:
        n = 1 if st in HTTP_STAGES else workers
        units += [Unit((st,), i, n) for i in range(n)]
    return units


def for_worker(settings: TidingsSettings, index: int, count: int) -> TidingsSettings:
    """The settings of worker `index` of `count`: its own `runtime.instance_id` if one is set.

    Without `instance_id` every process claims its own slot (streams/runtime/member.py); a
    fixed one would be shared by all workers, which would then fence each other, so worker
    i of several gets `<instance_id>-w<i>` (stable across restarts of the same command).
    """
    rt = settings.runtime
    if count <= 1 or not rt.instance_id:
        return settings
    runtime = rt.model_copy(update={"instance_id": f"{rt.instance_id}-w{index}"})
    return settings.model_copy(update={"runtime": runtime})


# After the stop bound, the main loop logs and returns 1; the watchdog acts only when even
# that did not happen.
_WATCHDOG_GRACE_S = 5.0


def stop_bound_s(settings: TidingsSettings) -> float:
    """How long a stage process may take to stop after SIGTERM before it gives up.

    Draining, the final commit (retried for up to another drain bound), the deliver worker
    finishing its provider calls (a third), and closing.
    """
    return 3 * settings.runtime.drain_timeout_s + 20


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
    if name == "recipients":
        from streams.stages.recipients import RecipientsStage

        return RecipientsStage(ctx)
    if name == "callbacks":
        from streams.stages.callbacks import CallbacksStage

        return CallbacksStage(ctx)
    if name == "gateway":
        from streams.stages.gateway import GatewayStage

        return GatewayStage(ctx)
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
    announce: Path | None = None,
) -> int:
    """Run `stages` until stopped; returns the exit code (0 clean, 1 a stage failed). Blocks.

    `stages` None means `default_stages(settings)`. `send_hook`: tests only (fault injection).
    Serves `/metrics`, `/healthz` and `/readyz` (observe.host:observe.port; its URL is then
    `metrics.endpoint`) and writes the bound port to `announce` for a supervisor. Exits 1
    at once, before any stage starts, when that port is taken.
    """
    if stages is None:
        stages = default_stages(settings)
    # A stage's I/O thread gives the GIL up for every socket call and waits for it back; at
    # Python's default 5 ms a busy sibling thread (deliver's consumer loop) held it that long
    # each time (issue 12: +50% sends/s at 0.5 ms, same CPU per send).
    sys.setswitchinterval(settings.runtime.switch_interval_s)
    if settings.runtime.gc_thresholds is not None:
        gc.set_threshold(*settings.runtime.gc_thresholds)
    stop = stop or threading.Event()
    metrics = metrics or Metrics()
    ref = (
        _catalog(settings) if {"route", "deliver", "recipients", "gateway"} & set(stages) else None
    )
    errors: list[BaseException] = []
    if not settings.observe.metrics:
        disable_metrics()
    for n in stages:
        metrics.expect(n)
    observer = ProcessObserver(
        settings, stages, metrics, announce=announce,
        on_scrape=[lambda: CATALOG.info({"version": ref.current.version})] if ref else [],
    )  # fmt: skip
    try:
        observer.start()
    except ObserveError as exc:
        log.error("%s", exc)
        observer.close()
        if ref is not None:
            ref.stop()
        return 1
    metrics.endpoint = observer.url
    if observer.url:
        log.info("metrics at %s/metrics, health at /healthz and /readyz", observer.url)
    tracing = Tracing.start(settings, "+".join(stages))

    bound_s = stop_bound_s(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping (finishing in-flight work, committing)", signum)
        if not stop.is_set():
            # A watchdog outside the interpreter: whatever holds the process (a client call
            # that keeps the GIL, a lock, interpreter teardown), it writes every thread's
            # stack to stderr and exits 1 once the stop bound is over.
            faulthandler.dump_traceback_later(bound_s + _WATCHDOG_GRACE_S, exit=True)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # `kill -USR1 <pid>` writes every thread's stack to stderr: how an operator (or a
        # test) sees where a process that won't stop is waiting, without stopping it.
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def guard(stage: Stage) -> None:
        try:
            stage.run()
        except BaseException as exc:
            log.error("stage %s failed: %s", stage.name, exc, exc_info=exc)
            errors.append(exc)
            stop.set()

    # Route and deliver in one process: route waits while deliver is full (back-pressure).
    full = threading.Event() if {"route", "deliver"} <= set(stages) else None
    ctx = StageContext(settings, stop, metrics, catalog=ref, deliver_full=full,
                       send_hook=send_hook, tracing=tracing)  # fmt: skip
    # Daemon threads: a stage wedged in a client call (the broker gone for good) must not
    # keep the process alive past the stop bound below.
    threads = [
        threading.Thread(
            target=guard, args=(_build(n, ctx),), name=n,
            daemon=True,
        )
        for n in stages
    ]  # fmt: skip
    rt = settings.runtime
    heap = HeapFreezer(rt.gc_freeze_after_s, rt.gc_refreeze_every_s, rt.gc_reclaim_every_s)
    start_pause_metrics()
    if ref is not None:
        ref.add_listener(heap.catalog_switched)
    for t in threads:
        t.start()
    next_tick = time.monotonic() + tick_s
    stopped_at: float | None = None
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
            heap.tick()
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
        heap.close()
        stop_pause_metrics()
        if ref is not None:
            ref.stop()
        tracing.shutdown()
        observer.close()
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
