"""The stage contract: what every stage is given, and how it takes records from Kafka.

A stage is an object with a `name` and a blocking `run()` that returns when `ctx.stop` is
set (or raises FatalStageError for what the operator must fix). It is built from one
`StageContext`, the same for every stage of a process; stage-specific parts (deliver's
providers, its channel list) are keyword arguments beside it. Nothing connects before
`run()`.

Offsets travel with the records and are committed last, in order, only for finished work
(`streams.runtime.offsets`); a stage that is full pauses its partitions instead of
sleeping (deliver: `DeliverStage._pause`), and an in-process route stage reads
`ctx.deliver_full` to stop routing further ahead than deliver can send.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from confluent_kafka import Consumer, Message

from schemas.settings import TidingsSettings
from streams.observe.tracing import Tracing
from streams.runtime.metrics import Metrics

if TYPE_CHECKING:  # the catalog lives a floor up (streams.state); only its type is needed here
    from streams.state.catalog import CatalogRef

__all__ = ["SendControl", "SendHook", "Stage", "StageContext", "poll_batch"]


class SendControl(Protocol):
    """What a send hook may do to the deliver worker that calls it."""

    def hold_new_sends(self) -> None:
        """Start no provider call from now on (those in flight finish)."""

    def quiet(self) -> bool:
        """Whether no provider call and no send record is in progress."""


class SendHook(Protocol):
    """Called on the deliver worker's event loop at the moments a crash hurts most. Tests
    only: the crash tests inject one that kills the process there (tests/integration/
    crash_entry.py); production wiring passes none."""

    def after_send(self, sends: int, control: SendControl) -> None:
        """After the `sends`-th send was recorded (Postgres and Redis)."""

    def after_claim(self, claims: int, control: SendControl) -> None:
        """After the `claims`-th claim was taken, before its provider call."""

    def after_accept(self, accepted: int, control: SendControl) -> None:
        """Right after the `accepted`-th provider answer, before its record is started."""


@dataclass(frozen=True)
class StageContext:
    """What every stage of one process shares; built once by `streams.app`."""

    settings: TidingsSettings
    stop: threading.Event
    metrics: Metrics
    # The live catalog (route and deliver render from it); None for stages that don't use it.
    catalog: CatalogRef | None = None
    # Set by an in-process deliver stage while it is full (its partitions paused for
    # back-pressure), cleared when it has room again; the route stage in the same process
    # pauses meanwhile. None when route and deliver run in different processes.
    deliver_full: threading.Event | None = None
    # Tests only (fault injection); None in production.
    send_hook: SendHook | None = None
    # The process's tracer (streams.observe.tracing); off unless observe.otlp_endpoint is set.
    tracing: Tracing = field(default_factory=Tracing.off)

    def require_catalog(self, stage: str) -> CatalogRef:
        """The catalog; raises ValueError (a wiring bug) if this context has none."""
        if self.catalog is None:
            raise ValueError(f"the {stage} stage needs a catalog in its StageContext")
        return self.catalog


class Stage(Protocol):
    """A runnable stage: `run()` blocks until `ctx.stop` is set."""

    name: str

    def run(self) -> None: ...


def poll_batch(
    consumer: Consumer, timeout_s: float, max_records: int, fill_until: float | None = None
) -> list[Message]:
    """Wait up to `timeout_s` for the first record, then fill the batch until `fill_until`.

    `fill_until` is a `time.monotonic()` instant: until then (and up to `max_records`) the
    batch takes records as they arrive; past it, or None, only what is already fetched. A
    stage passes its last commit + its commit interval: a quiet topic adds no latency (the
    instant is long past when a record comes), a busy one commits at most once per interval
    instead of once per fetch (each transaction costs the broker a marker on every
    partition it touched). Blocks at most `timeout_s` + what is left until `fill_until`;
    returns [] on timeout. Error events come back among the records
    (see `streams.runtime.kafka.records`).
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    msgs = [first]
    if max_records > 1:
        msgs += consumer.consume(max_records - 1, 0)
    if fill_until is not None:
        while len(msgs) < max_records and (left := fill_until - time.monotonic()) > 0:
            msgs += consumer.consume(max_records - len(msgs), left)
    return msgs
