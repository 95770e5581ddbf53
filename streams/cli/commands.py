"""Subcommands beyond `doctor`: run, topics, emit, demo, db, smtp-sink, dev."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from schemas.settings import TidingsSettings

if TYPE_CHECKING:
    from streams.app import Unit

__all__ = ["register"]

log = logging.getLogger(__name__)


def _logging(s: TidingsSettings, verbose: bool, label: str = "") -> None:
    from streams.observe import configure_logging

    configure_logging(s.log.format, "DEBUG" if verbose else s.log.level, label)


# ---------------------------------------------------------------- run


def _workers(text: str) -> int:
    from streams.app import MAX_WORKERS

    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be a whole number 1..{MAX_WORKERS}, got {text!r}")
    return n


def _worker_of(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    return int(index), int(count)


def _run(args: argparse.Namespace, s: TidingsSettings) -> int:
    from catalog import CatalogLoadError
    from streams.app import default_stages, for_worker, plan_processes, run_stages

    index, count = args.worker or (0, 1)
    _logging(s, args.verbose, f"w{index}/{count} " if count > 1 else "")
    announce = Path(args.observe_announce) if args.observe_announce else None
    if announce is not None:
        # A supervisor's child: it serves on a free loopback port and names it in `announce`;
        # the supervisor serves observe.host:observe.port for all its children.
        observe = s.observe.model_copy(update={"host": "127.0.0.1", "port": 0})
        s = s.model_copy(update={"observe": observe})
    stages = tuple(args.stage) if args.stage else default_stages(s)
    try:
        units = plan_processes(stages, workers=args.workers, threads=args.threads,
                               named=bool(args.stage))  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sink = _start_sink(args.smtp_sink, s) if args.smtp_sink else None
    try:
        if len(units) > 1:
            return _supervise(args, s, units)
        rc = run_stages(for_worker(s, index, count), units[0].stages, announce=announce)
    except CatalogLoadError as exc:
        print(f"error: the catalog at {s.catalog.path} is invalid:\n{exc}", file=sys.stderr)
        return 2
    finally:
        if sink is not None:
            sink.stop()
    log.info("stopped (exit code %d)", rc)
    _exit_now(rc)


def _exit_now(rc: int) -> NoReturn:
    """End a stage process that has stopped: its stages closed what they own.

    What interpreter teardown has left to do is destroying client handles and joining
    helper threads, and librdkafka has been seen to block in calls far past their timeouts
    (streams/runtime/transactions.py): that must not keep a stopped process from exiting.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _supervise(args: argparse.Namespace, s: TidingsSettings, units: list[Unit]) -> int:
    """Run every unit as `tidings run --stage … --threads --worker i/n`, a child of this one.

    The supervisor serves observe.host:observe.port for all of them (streams/observe/merge.py).
    """
    import tempfile

    from streams.app import stop_bound_s
    from streams.observe import Checks, Children, ObserveError, ObserveServer
    from streams.runtime.workers import Worker, supervise

    base = [sys.executable, "-m", "streams.cli"]
    if args.config:
        base += ["--config", args.config]
    s.runtime.local_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="observe-", dir=s.runtime.local_dir) as tmp:
        children = Children([u.name for u in units], Path(tmp))
        workers = []
        for u in units:
            argv = [*base, "run", *(a for st in u.stages for a in ("--stage", st)), "--threads"]
            argv += ["-v"] if args.verbose else []
            argv += ["--worker", f"{u.index}/{u.count}"]
            argv += ["--observe-announce", str(children.port_file(u.name))]
            workers.append(Worker(u.name, tuple(argv)))
        server = None
        if s.observe.port is not None:
            checks = Checks(children.live, children.ready, children.metrics)
            server = ObserveServer(s.observe.host, s.observe.port, checks)
            try:
                server.start()
            except ObserveError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            logging.getLogger("tidings").info(
                "metrics of all %d workers at %s/metrics", len(units), server.url
            )
        try:
            # The children's own bound, plus their interpreter start-up and exit.
            return supervise(workers, stop_bound_s=stop_bound_s(s) + 15)
        finally:
            if server is not None:
                server.close()


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
    from streams.app import MAX_WORKERS, STAGES

    run = sub.add_parser(
        "run",
        help="run pipeline stages until SIGINT/SIGTERM",
        description="Run pipeline stages until SIGINT/SIGTERM. Every stage runs as its own "
        "process (children of this one) unless --threads; one stage with one worker runs in "
        "this process.",
    )
    run.add_argument("--stage", action="append", choices=STAGES,
                     help="run only this stage (repeatable); default: all")  # fmt: skip
    run.add_argument("--workers", type=_workers, default=1, metavar="N",
                     help=f"N processes (consumer-group members) of each stage, "
                     f"1..{MAX_WORKERS}; default 1")  # fmt: skip
    run.add_argument(
        "--threads",
        action="store_true",
        help="run the stages as threads of one process (N such with --workers)",
    )
    # Internal: set by the supervisor on its children ("INDEX/COUNT").
    run.add_argument("--worker", type=_worker_of, help=argparse.SUPPRESS)
    # Internal: set by the supervisor; the child writes its metrics port there.
    run.add_argument("--observe-announce", help=argparse.SUPPRESS)
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
