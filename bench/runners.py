"""The processes the harness measures, one per run: `python -m bench.runners KIND --config FILE`.

Every runner prints one JSON line per `--tick-s` to stdout: `{"t": unix time, "c": {counters}}`
(counters only grow), and once more when it stops. The harness reads those lines for throughput
and samples the process with psutil for CPU and memory. Every runner stops on SIGTERM/SIGINT or
after `--max-s`. A `stages` runner that delivers adds `"q": {quantiles}` (floats, milliseconds,
over every send since it started): `crash_window_p50_ms`/`_p99_ms` (provider accepted → first
durable record) and `crash_window_pg_p50_ms`/`_p99_ms` (→ Postgres `deliveries` commit).

- `raw`: confluent-kafka consume → json.loads → produce passthrough, the limit for Python.
  It seeks back to the start of its input when it has read everything, so it can run as
  long as the window needs without a giant pre-produced topic.
- `faust`: the faust-streaming baseline (see bench/faust_route.py).
- `stages`: tidings' own stages via `streams.app.run_stages` (route alone, or the pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["main"]


# A private handle on the original stdout: faust's worker redirects sys.stdout to its logger.
_OUT = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)


def _emit(counts: dict[str, int], quantiles: dict[str, float] | None = None) -> None:
    line: dict[str, Any] = {"t": time.time(), "c": counts}
    if quantiles:
        line["q"] = quantiles
    _OUT.write(json.dumps(line) + "\n")
    _OUT.flush()


def _stop_on_signals(stop: threading.Event) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _ticker(
    stop: threading.Event,
    tick_s: float,
    read: Callable[[], dict[str, int]],
    quantiles: Callable[[], dict[str, float]] | None = None,
) -> None:
    def loop() -> None:
        # Quantiles sort the whole reservoir: every 5 s, not every tick (sorting 10,000
        # samples five times a second was ~1% of a deliver process's CPU). The line printed
        # on exit carries the final ones.
        last_q = 0.0
        while not stop.wait(tick_s):
            q = None
            if quantiles is not None and time.monotonic() - last_q >= 5.0:
                q, last_q = quantiles(), time.monotonic()
            _emit(read(), q)

    threading.Thread(target=loop, name="ticker", daemon=True).start()


def run_raw(settings: Any, out_topic: str, stop: threading.Event, tick_s: float) -> int:
    """Consume the event topics, decode each value as JSON, produce it to `out_topic`."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    base = settings.kafka.client_config()
    consumer = Consumer(
        {
            **base,
            "group.id": settings.groups.route,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    producer = Producer(
        {**base, "linger.ms": 5, "compression.type": "lz4", "queue.buffering.max.messages": 500000}
    )
    counts = {"events_in": 0, "produced": 0, "invalid": 0, "rewinds": 0}
    lock = threading.Lock()

    def read() -> dict[str, int]:
        with lock:
            return dict(counts)

    _ticker(stop, tick_s, read)
    consumer.subscribe(list(settings.topics.events))
    at_eof: set[tuple[str, int]] = set()
    try:
        while not stop.is_set():
            msgs = consumer.consume(500, 0.2)
            n_in = n_bad = 0
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_eof.add((m.topic() or "", m.partition() or 0))
                    continue
                n_in += 1
                try:
                    json.loads(m.value() or b"")
                except ValueError:
                    n_bad += 1
                while True:
                    try:
                        producer.produce(out_topic, m.value(), m.key(), headers=m.headers())
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            with lock:
                counts["events_in"] += n_in
                counts["produced"] += n_in
                counts["invalid"] += n_bad
            assigned = {(p.topic, p.partition) for p in consumer.assignment()}
            if assigned and assigned <= at_eof:
                # Read everything: go round again (the broker serves it from page cache).
                for t, p in assigned:
                    consumer.seek(TopicPartition(t, p, 0))
                at_eof.clear()
                with lock:
                    counts["rewinds"] += 1
    finally:
        consumer.close()
        producer.flush(10)
    _emit(read())
    return 0


# (Metrics sample name, prefix of the emitted quantile keys)
_CRASH_WINDOW = (("crash_window_s", "crash_window"), ("crash_window_postgres_s", "crash_window_pg"))


def run_stages(settings: Any, stages: tuple[str, ...], stop: threading.Event, tick_s: float) -> int:
    """Run tidings stages in this process (threads) via `streams.app.run_stages`."""
    from streams.app import run_stages as run
    from streams.runtime.metrics import Metrics

    metrics = Metrics()

    def quantiles() -> dict[str, float]:
        # Samples observed by the deliver stage (streams/stages/deliver_worker.py), seconds → ms.
        out: dict[str, float] = {}
        for sample, key in _CRASH_WINDOW:
            for q, v in metrics.quantiles(sample, (0.5, 0.99)).items():
                out[f"{key}_p{round(q * 100)}_ms"] = round(v * 1000, 3)
        return out

    _ticker(stop, tick_s, metrics.snapshot, quantiles)
    rc = run(settings, stages, stop=stop, metrics=metrics)
    _emit(metrics.snapshot(), quantiles())
    return rc


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one runner; returns its exit code."""
    ap = argparse.ArgumentParser(prog="python -m bench.runners")
    ap.add_argument("kind", choices=["raw", "faust", "stages"])
    ap.add_argument("--config", required=True, help="tidings config file (YAML)")
    ap.add_argument("--stages", default="route", help="comma-separated, for kind=stages")
    ap.add_argument("--out-topic", default="", help="output topic for raw and faust")
    ap.add_argument("--tick-s", type=float, default=0.5)
    ap.add_argument("--max-s", type=float, default=900.0, help="hard stop after this long")
    args = ap.parse_args(argv)

    import logging

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    from schemas.settings import load_settings

    settings = load_settings(args.config)
    stop = threading.Event()
    if args.kind == "faust":
        from bench.faust_route import run_faust

        return run_faust(settings, args.out_topic, args.tick_s, args.max_s, _emit)
    _stop_on_signals(stop)
    timer = threading.Timer(args.max_s, stop.set)
    timer.daemon = True
    timer.start()
    try:
        if args.kind == "raw":
            return run_raw(settings, args.out_topic, stop, args.tick_s)
        return run_stages(settings, tuple(args.stages.split(",")), stop, args.tick_s)
    finally:
        stop.set()
        timer.cancel()


if __name__ == "__main__":
    sys.exit(main())
