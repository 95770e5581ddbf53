"""`tidings dev` (what `make run` runs): the whole pipeline on the local stack, with demo traffic.

Ensures topics, migrates, loads a demo recipient directory, starts an SMTP sink that
keeps every mail as an .eml file, runs all stages, produces demo events, and prints a
live summary until Ctrl-C.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from schemas.settings import TidingsSettings
from streams.app import run_stages
from streams.dev.demo import demo_recipients, produce_demo
from streams.dev.inbox_demo import (
    DEMO_INBOX_TENANT,
    DEMO_INBOX_USER,
    inbox_url,
    produce_payments,
    with_gateway,
)
from streams.dev.smtp_sink import SmtpSink
from streams.runtime.kafka import ensure_topics, pipeline_topics
from streams.runtime.metrics import Metrics
from streams.state.db import apply_migrations
from streams.state.directory import Directory

__all__ = ["run_dev", "summary_line"]


def summary_line(counts: dict[str, int], mail_dir: Path, eml: int) -> str:
    """One line of live summary; pure."""
    c = counts.get
    return (
        f"events in {c('events_in', 0):>6} | queued {c('queued', 0):>6} | sent {c('sent', 0):>6}"
        f" | failed {c('failed', 0):>4} | dlq {c('dlq', 0):>4} | audited {c('audited', 0):>6}"
        f" | mail: {mail_dir}/ ({eml} .eml)"
    )


def run_dev(settings: TidingsSettings, *, rate: float, mail_dir: Path, seed: int) -> int:
    """Run the local demo until Ctrl-C; returns the exit code. Blocks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = with_gateway(settings)
    for name in ensure_topics(settings, pipeline_topics(settings)):
        print(f"created topic {name}")
    for m in apply_migrations(settings.postgres.conninfo()):
        print(f"applied migration {m.version:04d}_{m.name}")
    directory = Directory(settings.postgres.conninfo())
    try:
        seeded = directory.import_rows(demo_recipients())
    finally:
        directory.close()
    print(f"demo directory: {seeded} recipients (`tidings recipients show acme/demo-01`)")
    mail_dir.mkdir(parents=True, exist_ok=True)
    sink = SmtpSink(mail_dir, port=settings.smtp.port)
    sink.start()
    print(f"SMTP sink on {settings.smtp.host}:{settings.smtp.port}, mail kept in {mail_dir}/")
    print(f"demo events at {rate}/s (every 25th is invalid, to show the DLQ); Ctrl-C stops\n")
    stop = threading.Event()
    metrics = Metrics()
    demo = threading.Thread(
        target=produce_demo,
        args=(settings, 10_000_000, rate, seed, 25, stop),
        name="demo",
        daemon=True,
    )
    demo.start()
    payments = threading.Thread(target=produce_payments, args=(settings, stop), name="payments",
                                daemon=True)  # fmt: skip
    payments.start()
    print(f"web inbox of {DEMO_INBOX_TENANT}/{DEMO_INBOX_USER}, filling live (a payment every "
          f"5 s):\n  {inbox_url(settings)}\n", flush=True)  # fmt: skip

    shown: list[str] = []

    def tick(m: Metrics) -> None:
        if m.endpoint and not shown:
            shown.append(m.endpoint)
            print(f"metrics at {m.endpoint}/metrics, health at {m.endpoint}/healthz and "
                  f"{m.endpoint}/readyz (observe.port)\n", flush=True)  # fmt: skip
        line = summary_line(m.snapshot(), mail_dir, sink.received)
        print(f"\r{line}", end="", flush=True) if sys.stdout.isatty() else print(line, flush=True)

    try:
        rc = run_stages(settings, stop=stop, metrics=metrics, on_tick=tick, tick_s=1.0)
    finally:
        stop.set()
        sink.stop()
    print(f"\nstopped; {sink.received} mail(s) in {mail_dir}/")
    return rc
