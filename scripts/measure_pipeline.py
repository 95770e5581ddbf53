"""Measure the one-process pipeline over N events (default 10,000): events/s and notifications/s.

Not a test and not the benchmark harness (`make bench`): a quick, repeatable
figure. It creates uuid topics, pre-produces N demo events, starts an SMTP sink
that accepts at once, runs route+deliver+audit in this process, and times from
start until every expected email has arrived and every status is audited.

    .venv/bin/python scripts/measure_pipeline.py [--events 10000]

With `--deliver-only` it routes everything first, then times the deliver stage alone (one
process) draining the dispatch topic: the sends/s one deliver process sustains. Add
`--sink-delay-s 0.2` for a sink that takes 200 ms per mail.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

from schemas.settings import TidingsSettings, load_settings
from streams.app import run_stages
from streams.dev.demo import encode, sample_event
from streams.dev.smtp_sink import SmtpSink
from streams.runtime.kafka import ensure_topics, pipeline_topics
from streams.runtime.metrics import Metrics
from streams.state.db import apply_migrations


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the SMTP sink did not listen on {port} within 10 s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--verbose", action="store_true", help="print the counters as it goes")
    ap.add_argument("--sink-delay-s", type=float, default=0.0, help="the sink's delay per mail")
    ap.add_argument("--pool-size", type=int, default=8, help="SMTP connections per process")
    ap.add_argument("--concurrency", type=int, default=64, help="runtime.send_concurrency")
    ap.add_argument("--provider-limit", type=int, default=32, help="the provider's max_concurrency")
    ap.add_argument("--deliver-only", action="store_true", help="route first, then time deliver")
    ap.add_argument(
        "--sink",
        choices=["process", "thread"],
        default="process",
        help="run the SMTP sink as its own process (like a real server) or in this process",
    )
    args = ap.parse_args()
    u = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="tidings-measure-"))
    (tmp / "mail").mkdir()
    port = free_port()
    sink_proc = None
    if args.sink == "thread":
        sink = SmtpSink(tmp / "mail", port=port)
        sink.start()
    else:
        sink_proc = subprocess.Popen(
            [sys.executable, "-m", "streams.dev.smtp_sink", "--port", str(port),
             "--dir", str(tmp / "mail"), "--delay-s", str(args.sink_delay_s)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(port)
    order_t, user_t = f"measure.{u}.order", f"measure.{u}.user"
    cat = tmp / "catalog"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples/catalog", cat)
    rules = (cat / "rules.yaml").read_text()
    rules = rules.replace('events: ["order.created"]', f'events: ["{order_t}", "order.created"]')
    rules = rules.replace('events: ["user.registered"]', f'events: ["{user_t}", "user.registered"]')
    (cat / "rules.yaml").write_text(rules)
    cfg: dict[str, Any] = {
        "topics": {"events": [order_t, user_t],
                   "dispatch_prefix": f"measure.{u}.dispatch.", "status": f"measure.{u}.status",
                   "dlq": f"measure.{u}.dlq", "retry_prefix": f"measure.{u}.retry."},
        "groups": {"route": f"m-route-{u}", "deliver": f"m-deliver-{u}", "audit": f"m-audit-{u}"},
        "smtp": {"port": port},
        "channels": {"email": [{"kind": "smtp", "port": port, "pool_size": args.pool_size,
                                "max_concurrency": args.provider_limit}]},
        "runtime": {"send_concurrency": args.concurrency},
        "catalog": {"path": str(cat)},
    }  # fmt: skip
    s = prepare(tmp, cfg)

    rng = random.Random(args.seed)
    p = Producer({**s.kafka.client_config(), "linger.ms": 20})
    for _ in range(args.events):
        doc = sample_event(rng)
        doc["source"] = f"urn:tidings:measure:{u}"  # new notification ids every run
        value, headers = encode(doc, "structured")
        topic = order_t if doc["type"] == "order.created" else user_t
        p.produce(topic, value=value, headers=headers)
        p.poll(0)
    p.flush(60)

    if args.deliver_only:
        rc = deliver_only(s, args.events)
        if sink_proc is not None:
            sink_proc.terminate()
            sink_proc.wait(10)
        else:
            sink.stop()
        print(f"emails received: {len(list((tmp / 'mail').glob('*.eml')))}")
        return rc
    stop = threading.Event()
    metrics = Metrics()
    t = threading.Thread(target=run_stages, args=(s, ("route", "deliver", "audit")),
                         kwargs={"stop": stop, "metrics": metrics})  # fmt: skip
    start = time.perf_counter()
    t.start()
    routed_at = sent_at = 0.0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        c = metrics.snapshot()
        if not routed_at and c.get("events_in", 0) >= args.events:
            routed_at = time.perf_counter() - start
        finished = c.get("sent", 0) + c.get("failed", 0)
        if not sent_at and routed_at and finished >= c.get("queued", 1):
            sent_at = time.perf_counter() - start
        if sent_at and c.get("audited", 0) >= 2 * c.get("queued", 0):
            break
        if args.verbose and int(time.monotonic() * 20) % 40 == 0:
            print(c, flush=True)
        time.sleep(0.05)
    done = time.perf_counter() - start
    stop.set()
    t.join(60)
    if sink_proc is not None:
        sink_proc.terminate()
        sink_proc.wait(10)
    else:
        sink.stop()
    received = len(list((tmp / "mail").glob("*.eml")))
    c = metrics.snapshot()
    print(
        f"events: {args.events}, notifications: {c.get('queued', 0)}, emails received: {received}"
    )
    print(f"route done after {routed_at:.2f} s  -> {args.events / routed_at:,.0f} events/s routed")
    print(f"all sent after  {sent_at:.2f} s  -> {args.events / sent_at:,.0f} events/s end to end "
          f"({c.get('sent', 0) / sent_at:,.0f} emails/s)")  # fmt: skip
    print(f"all audited after {done:.2f} s")
    return 0


def prepare(tmp: Path, cfg: dict[str, Any]) -> TidingsSettings:
    """Write the config, load it, create the topics and apply the migrations."""
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    s = load_settings(str(tmp / "cfg.yaml"))
    ensure_topics(s, pipeline_topics(s))
    apply_migrations(s.postgres.conninfo())
    return s


def deliver_only(s: TidingsSettings, events: int) -> int:
    """Route every event, then time one deliver stage draining the dispatch topic."""
    stop, metrics = threading.Event(), Metrics()
    t = threading.Thread(target=run_stages, args=(s, ("route",)),
                         kwargs={"stop": stop, "metrics": metrics})  # fmt: skip
    t.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and metrics.snapshot().get("events_in", 0) < events:
        time.sleep(0.05)
    time.sleep(1.0)  # the last transaction commits
    stop.set()
    t.join(60)
    queued = metrics.snapshot().get("queued", 0)
    stop, metrics = threading.Event(), Metrics()
    t = threading.Thread(target=run_stages, args=(s, ("deliver",)),
                         kwargs={"stop": stop, "metrics": metrics})  # fmt: skip
    start = time.perf_counter()
    t.start()
    first = 0.0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        c = metrics.snapshot()
        finished = c.get("sent", 0) + c.get("failed", 0)
        if not first and finished:
            first = time.perf_counter() - start
        if finished >= queued:
            break
        time.sleep(0.02)
    took = time.perf_counter() - start
    stop.set()
    t.join(60)
    c = metrics.snapshot()
    # From the first finished send, so consumer-group join time is not counted.
    print(f"notifications: {queued}, sent: {c.get('sent', 0)}, failed: {c.get('failed', 0)}")
    print(f"deliver alone: {took:.2f} s incl. {first:.2f} s to the first send -> "
          f"{c.get('sent', 0) / (took - first):,.0f} sends/s")  # fmt: skip
    return 0 if c.get("sent", 0) >= queued else 1


if __name__ == "__main__":
    raise SystemExit(main())
