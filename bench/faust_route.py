"""The faust-streaming baseline: an agent doing the route stage's job.

The agent calls tidings' own pure `streams.stages.route.route_record` (decode the CloudEvent,
match the same 50-rule catalog loaded with `catalog.load_catalog`, build Notifications and
`queued` statuses, dead-letter invalid events) and sends every output with faust's
`Topic.send`. So the work per event is identical to tidings' route stage and the ratio
route/faust measures the runtime around it: faust's agent/stream machinery over aiokafka
with at-least-once commits, against tidings' confluent-kafka batch loop with one Kafka
transaction per batch (exactly-once, which is more work, not less).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterable, Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["run_faust"]


def run_faust(
    settings: Any,
    out_topic: str,
    tick_s: float,
    max_s: float,
    emit: Callable[[dict[str, int]], None],
) -> int:
    """Run the faust worker until SIGTERM/SIGINT or `max_s`; blocks; returns 0."""
    import faust
    from faust.types import EventT

    from catalog import load_catalog
    from streams.stages.route import route_record

    del out_topic  # outputs go where route_record sends them (dispatch, status, dlq)
    catalog = load_catalog(settings.catalog.path)
    counts: dict[str, int] = {"events_in": 0, "queued": 0, "dlq": 0, "unmatched": 0}
    app = faust.App(
        f"{settings.groups.route}",
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=1,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        producer_compression_type="lz4",
    )
    src = app.topic(*settings.topics.events, key_type=bytes, value_type=bytes)
    outs: dict[str, Any] = {}

    def topic(name: str) -> Any:
        t = outs.get(name)
        if t is None:
            t = outs[name] = app.topic(name, key_type=bytes, value_type=bytes)
        return t

    @app.agent(src)  # type: ignore[untyped-decorator,misc]
    async def route(stream: AsyncIterable[Any]) -> None:
        events: AsyncIterable[EventT] = stream.events()  # type: ignore[attr-defined]
        async for event in events:
            m = event.message
            got, outcome = route_record(
                topic=m.topic,
                partition=m.partition,
                offset=m.offset,
                timestamp_ms=int(m.timestamp * 1000) if m.timestamp else None,
                key=m.key,
                value=m.value,
                headers=list(m.headers or ()),
                catalog=catalog,
                settings=settings,
                now=datetime.now(UTC),
            )
            for o in got:
                await topic(o.topic).send(key=o.key, value=o.value, headers=o.headers)
            counts["events_in"] += 1
            if outcome == "routed":
                counts["queued"] += len(got) // 2
            else:
                counts[outcome] += 1

    @app.timer(tick_s)  # type: ignore[untyped-decorator,misc]
    async def tick() -> None:
        emit(dict(counts))

    logging.getLogger("faust").setLevel(logging.WARNING)
    killer = threading.Timer(max_s, lambda: os.kill(os.getpid(), signal.SIGTERM))
    killer.daemon = True
    killer.start()
    started = time.time()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        killer.cancel()
    emit(dict(counts) | {"runtime_ms": int((time.time() - started) * 1000)})
    return 0
