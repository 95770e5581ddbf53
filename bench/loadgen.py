"""Open-loop load: produce the bench workload at a fixed rate, whatever the pipeline does.

`python -m bench.loadgen --config FILE --rate 2000 --duration 30 --prefix lat50 --seed 7`
produces `rate` events/s for `duration` seconds (paced every 5 ms, never waiting for the
consumer side), then flushes and prints `{"produced": N, "late_ms": M}` where `late_ms` is how
far the generator itself fell behind its schedule at worst (so a too-slow generator shows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.workload import EVENT_TYPES, EventPool

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Produce at the given rate; returns 0."""
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic-prefix", required=True, help="topics are PREFIX<event type>")
    ap.add_argument("--rate", type=float, required=True, help="events per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--prefix", required=True, help="event id prefix")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    from confluent_kafka import Producer

    pool = EventPool(args.seed)
    topics = [f"{args.topic_prefix}{t}" for t in EVENT_TYPES]
    p = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    total = int(args.rate * args.duration)
    start = time.monotonic()
    sent = 0
    late = 0.0
    deadline = start + args.duration + 30.0  # bounded even if the broker stalls
    while sent < total and time.monotonic() < deadline:
        now = time.monotonic()
        due = min(total, int((now - start) * args.rate))
        if due - sent > args.rate * 0.05:  # more than 50 ms behind schedule
            late = max(late, (due - sent) / args.rate)
        while sent < due:
            r = pool.record(sent, args.prefix)
            try:
                p.produce(topics[r.topic_index], r.value, headers=r.headers)
            except BufferError:
                p.poll(0.01)
                continue
            sent += 1
        p.poll(0)
        time.sleep(0.005)
    p.flush(30)
    print(json.dumps({"produced": sent, "late_ms": round(late * 1000, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
