"""`tidings dlq list | show ID | replay`: argparse and thin handlers over streams.dlq."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from confluent_kafka import KafkaError, KafkaException

from schemas.settings import TidingsSettings
from streams.dlq.replay import DlqError, read_one, replay, select
from streams.dlq.select import Selection, format_line, format_show, parse_id, parse_since

__all__ = ["register"]


def _selection(args: argparse.Namespace) -> Selection:
    return Selection(
        reasons=tuple(args.reason or ()),
        stages=tuple(args.stage or ()),
        topics=tuple(args.topic or ()),
        since=args.since,
        ids=frozenset(getattr(args, "id", None) or ()),
    )


def _why(exc: Exception) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return f"Kafka: {exc.args[0].str()}"
    return str(exc)


def _list(args: argparse.Namespace, s: TidingsSettings) -> int:
    try:
        found = select(s, _selection(args))
    except (DlqError, KafkaException) as exc:
        print(f"error: {_why(exc)}", file=sys.stderr)
        return 1
    shown = found[: args.limit] if args.limit else found
    for dl in shown:
        print(format_line(dl))
    more = f" (showing {len(shown)})" if len(shown) < len(found) else ""
    print(f"{len(found)} dead letter(s) in {s.topics.dlq} matched{more}", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace, s: TidingsSettings) -> int:
    partition, offset = args.dlq_id
    try:
        dl = read_one(s, s.topics.dlq, partition, offset)
    except (DlqError, KafkaException) as exc:
        print(f"error: {_why(exc)}", file=sys.stderr)
        return 1
    if dl is None:
        print(
            f"error: no dead letter {partition}:{offset} in {s.topics.dlq}; "
            "`tidings dlq list` shows the ids",
            file=sys.stderr,
        )
        return 1
    print(format_show(dl, s.topics.dlq))
    return 0


def _replay(args: argparse.Namespace, s: TidingsSettings) -> int:
    try:
        n, skipped, bad = replay(s, _selection(args), limit=args.limit, dry_run=args.dry_run)
    except (DlqError, KafkaException) as exc:
        print(f"error: {_why(exc)}", file=sys.stderr)
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {n}, skipped {skipped} already replayed, {bad} not replayable",
        file=sys.stderr,
    )
    return 1 if bad else 0


def _arg_id(text: str) -> tuple[int, int]:
    try:
        return parse_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _arg_since(text: str) -> datetime:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _arg_limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--limit {text!r}: give a whole number ≥ 1")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dlq list | show | replay` to `sub`."""
    filters = argparse.ArgumentParser(add_help=False)
    g = filters.add_argument_group("filters (repeat a flag to accept any of its values)")
    g.add_argument("--reason", action="append", help="tidings-dlq-reason, e.g. smtp_550")
    g.add_argument("--stage", action="append", help="route, deliver or audit")
    g.add_argument("--topic", action="append", help="origin topic (glob patterns allowed)")
    g.add_argument("--since", type=_arg_since, help="dead-lettered at or after this ISO time")
    g.add_argument(
        "--limit",
        type=_arg_limit,
        help="at most N dead letters, oldest first (replay: N not yet replayed)",
    )

    dlq = sub.add_parser("dlq", help="list, show and replay dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True)

    ls = dsub.add_parser("list", parents=[filters], help="one line per dead letter, oldest first")
    ls.set_defaults(handler=_list)

    show = dsub.add_parser("show", help="headers and value of one dead letter")
    show.add_argument("dlq_id", metavar="ID", type=_arg_id, help="PARTITION:OFFSET (from list)")
    show.set_defaults(handler=_show)

    rp = dsub.add_parser(
        "replay", parents=[filters], help="produce dead letters back to their origin topics"
    )
    rp.add_argument("--id", action="append", type=_arg_id, metavar="ID",
                    help="only this dead letter, PARTITION:OFFSET (repeatable)")  # fmt: skip
    rp.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    rp.set_defaults(handler=_replay)
