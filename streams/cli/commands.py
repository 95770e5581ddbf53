"""Subcommands beyond `doctor`: run, topics, emit, demo, db, smtp-sink, dev."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from schemas.settings import TidingsSettings

__all__ = ["register"]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )


# ---------------------------------------------------------------- run


def _run(args: argparse.Namespace, s: TidingsSettings) -> int:
    from catalog import CatalogLoadError
    from streams.app import run_stages

    _logging(args.verbose)
    stages = tuple(args.stage) if args.stage else None  # None: the default stages
    sink = _start_sink(args.smtp_sink, s) if args.smtp_sink else None
    try:
        return run_stages(s, stages)
    except CatalogLoadError as exc:
        print(f"error: the catalog at {s.catalog.path} is invalid:\n{exc}", file=sys.stderr)
        return 2
    finally:
        if sink is not None:
            sink.stop()


def _start_sink(directory: str, s: TidingsSettings) -> Any:
    from streams.dev.smtp_sink import SmtpSink

    sink = SmtpSink(Path(directory), port=s.smtp.port)
    sink.start()
    return sink


# ---------------------------------------------------------------- topics, db


def _topics_ensure(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.runtime.kafka import ensure_topics, pipeline_topics

    wanted = pipeline_topics(s)
    created = ensure_topics(s, wanted)
    for name, parts in sorted(wanted.items()):
        print(f"{'created' if name in created else 'exists '}  {name} ({parts} partitions)")
    return 0


def _db_migrate(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.state.db import apply_migrations

    applied = apply_migrations(s.postgres.conninfo())
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("database is up to date")
    return 0


# ---------------------------------------------------------------- emit, demo


def _producer(s: TidingsSettings) -> Any:
    from streams.runtime.kafka import make_producer

    return make_producer(s)


def _emit(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.dev.demo import cloudevent, encode

    raw = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"error: --data is not JSON: {exc}", file=sys.stderr)
        return 2
    doc = cloudevent(args.type, data, source=args.source, tenant=args.tenant, event_id=args.id)
    value, headers = encode(doc, args.mode)
    p = _producer(s)
    key = args.key.encode() if args.key else None
    p.produce(args.topic or args.type, value=value, key=key, headers=headers)
    if p.flush(30):
        print("error: the event was not acknowledged within 30 s; is Kafka up?", file=sys.stderr)
        return 1
    print(f"emitted {args.type} id={doc['id']} to {args.topic or args.type} ({args.mode})")
    return 0


def _demo(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.dev.demo import produce_demo

    n = produce_demo(s, args.count, args.rate, args.seed, args.invalid_every)
    print(f"produced {n} demo events")
    return 0


# ---------------------------------------------------------------- smtp sink, dev


def _smtp_sink(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.dev.smtp_sink import main as sink_main

    return sink_main(["--port", str(args.port or s.smtp.port), "--dir", args.dir])


def _dev(args: argparse.Namespace, s: TidingsSettings) -> int:
    from streams.dev.pipeline import run_dev

    return run_dev(s, rate=args.rate, mail_dir=Path(args.mail_dir), seed=args.seed)


# ---------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommands to `sub`."""
    from streams.app import STAGES

    run = sub.add_parser("run", help="run pipeline stages until SIGINT/SIGTERM")
    run.add_argument("--stage", action="append", choices=STAGES,
                     help="run only this stage (repeatable); default: all")  # fmt: skip
    run.add_argument("--smtp-sink", metavar="DIR",
                     help="also run a local SMTP sink storing .eml files in DIR")  # fmt: skip
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(handler=_run)

    topics = sub.add_parser("topics", help="manage Kafka topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True)
    tsub.add_parser("ensure", help="create missing pipeline topics").set_defaults(
        handler=_topics_ensure
    )

    db = sub.add_parser("db", help="manage the Postgres schema")
    dsub = db.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(
        handler=_db_migrate
    )

    emit = sub.add_parser("emit", help="produce one event")
    emit.add_argument("type", help="CloudEvents type, e.g. order.created")
    emit.add_argument("--data", required=True, help="JSON data, or @FILE")
    emit.add_argument("--topic", help="topic (default: the type)")
    emit.add_argument("--mode", choices=["structured", "binary", "bare"], default="structured")
    emit.add_argument("--source", default="urn:tidings:cli")
    emit.add_argument("--tenant")
    emit.add_argument("--id", help="event id (default: a new uuid)")
    emit.add_argument("--key", help="Kafka record key")
    emit.set_defaults(handler=_emit)

    demo = sub.add_parser("demo", help="produce realistic sample events")
    demo.add_argument("--count", type=int, default=200)
    demo.add_argument("--rate", type=float, default=20.0, help="events/s, 0 = as fast as possible")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--invalid-every", type=int, default=0,
                      help="make every Nth event invalid JSON (0 = none)")  # fmt: skip
    demo.set_defaults(handler=_demo)

    sink = sub.add_parser("smtp-sink", help="a local SMTP server storing mail as .eml files")
    sink.add_argument("--port", type=int)
    sink.add_argument("--dir", default=".local/mail")
    sink.set_defaults(handler=_smtp_sink)

    dev = sub.add_parser("dev", help="the local demo: sink + pipeline + demo events + live summary")
    dev.add_argument("--rate", type=float, default=5.0, help="demo events/s")
    dev.add_argument("--seed", type=int, default=42)
    dev.add_argument("--mail-dir", default=".local/mail")
    dev.set_defaults(handler=_dev)
