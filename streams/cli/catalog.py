"""`tidings catalog …`: check, dry-run (`test`), `publish` to the catalog topic, `diff` over
past events. None of them sends a notification or commits a consumer offset."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from schemas.settings import DecodeLimits, TidingsSettings
from streams.state.catalog import DEFAULT_CATALOG_KEY, DEFAULT_CATALOG_TOPIC

__all__ = ["register"]

# Kafka's default message.max.bytes is 1 MiB; leave room for the record's overhead.
_MAX_BUNDLE = 900 * 1024


def _load(path: str) -> Any:
    from catalog import CatalogLoadError, load_catalog

    try:
        return load_catalog(path)
    except CatalogLoadError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace, s: TidingsSettings) -> int:
    cat = _load(args.dir)
    if cat is None:
        return 1
    print(f"{args.dir}: ok, version {cat.version}, {len(cat.rules)} rule(s)")
    return 0


def _now(text: str | None) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _events(path: str, event_type: str | None, limits: DecodeLimits) -> list[dict[str, Any]]:
    """The sample events in `path` (`-`: stdin) as CEL activations, decoded under `limits`.

    `limits` are the route stage's (`route.limits`), so a sample the pipeline would refuse is
    refused here too. Raises OSError, ValueError (bad JSON) or InvalidEventError.
    """
    from schemas.envelope import Origin, decode_event

    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    doc = json.loads(raw)
    docs = doc if isinstance(doc, list) else [doc]
    out = []
    for i, item in enumerate(docs):
        origin = Origin(topic=event_type or Path(path).stem, partition=0, offset=i)
        out.append(decode_event(json.dumps(item).encode(), [], origin, limits).as_cel())
    return out


def _test(args: argparse.Namespace, s: TidingsSettings) -> int:
    from catalog import CatalogError
    from catalog.dryrun import dry_run, format_rendered
    from schemas.exceptions import InvalidEventError

    cat = _load(args.dir)
    if cat is None:
        return 1
    try:
        events = _events(args.event, args.type, s.route.limits)
    except (OSError, ValueError, InvalidEventError) as exc:
        print(
            f"error: cannot read an event from {args.event}: {exc}. Fix: pass a JSON file "
            "holding a CloudEvent (or a list of them); bare JSON needs --type",
            file=sys.stderr,
        )
        return 2
    failed = False
    for env in events:
        print(f"# event {env['id']} ({env['type']}) under catalog {cat.version}")
        try:
            items = dry_run(cat, env, _now(args.now), args.locale or ())
        except CatalogError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
            continue
        if not items:
            rules = ", ".join(r.id for r in cat.rules_for(env["type"])) or "none"
            print(f"no notification (rules listening to {env['type']!r}: {rules})\n")
            continue
        print(format_rendered(items) + "\n")
        failed = failed or any(
            isinstance(c, CatalogError) for i in items for c in i.content.values()
        )
    print("(dry run: nothing was sent)", file=sys.stderr)
    return 1 if failed else 0


def _publish(args: argparse.Namespace, s: TidingsSettings) -> int:
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from catalog.bundle import encode_bundle
    from catalog.layout import read_tree

    cat = _load(args.dir)
    if cat is None:
        print("refused: a bad catalog is never published", file=sys.stderr)
        return 1
    bundle = encode_bundle(read_tree(Path(args.dir)), str(args.dir))
    if len(bundle) > _MAX_BUNDLE:
        print(
            f"error: the catalog bundle is {len(bundle)} bytes, over {_MAX_BUNDLE}. Fix: remove "
            "large files from the catalog directory (images belong on a CDN)",
            file=sys.stderr,
        )
        return 1
    conf = s.kafka.client_config()
    admin = AdminClient(conf)
    if args.topic not in admin.list_topics(timeout=10).topics:
        topic = NewTopic(
            args.topic,
            1,
            s.kafka.replication_factor,
            config={"cleanup.policy": "compact", "max.message.bytes": str(1024 * 1024)},
        )
        try:
            admin.create_topics([topic])[args.topic].result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                print(f"error: cannot create {args.topic}: {exc}", file=sys.stderr)
                return 1
    result: dict[str, Any] = {}
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    producer.produce(
        args.topic,
        bundle,
        args.key.encode(),
        on_delivery=lambda err, msg: result.update(err=err, msg=msg),
    )
    producer.flush(30)
    if result.get("err") is not None or "msg" not in result:
        print(f"error: publish failed: {result.get('err', 'timed out')}", file=sys.stderr)
        return 1
    msg = result["msg"]
    print(
        f"published catalog {cat.version} ({len(cat.rules)} rule(s), {len(bundle)} bytes) to "
        f"{args.topic}[{msg.partition()}]@{msg.offset()} key {args.key!r}"
    )
    return 0


def _diff(args: argparse.Namespace, s: TidingsSettings) -> int:
    from catalog.diff import DiffSummary, diff_event, format_change
    from catalog.replay import parse_from, replay
    from streams.exceptions import ReadStalled, TopicMissing
    from streams.runtime.reader import TopicReader

    old, new = _load(args.old), _load(args.new)
    if old is None or new is None:
        return 1
    try:
        start = parse_from(args.from_)
    except ValueError as exc:
        print(f"error: --from {args.from_!r}: {exc}", file=sys.stderr)
        return 2
    summary = DiffSummary()
    width = shutil.get_terminal_size((160, 40)).columns
    now = _now(args.now) if args.now else None
    print(f"# catalog diff {old.version} -> {new.version} over {args.from_} (limit {args.limit})")
    reader = TopicReader(s, start.topic, offset=start.offset, timestamp_ms=start.timestamp_ms,
                         limit=args.limit, purpose="diff")  # fmt: skip
    try:
        with reader:
            records = ((r.origin, r.value, r.headers) for r in reader)
            for env, timestamp in replay(records, summary, reader.total, not args.no_progress):
                at = now or timestamp
                for change in diff_event(old, new, env, at, args.locale or (), summary):
                    print(format_change(change, width) + "\n")
    except TopicMissing:
        print(f"error: --from: topic {start.topic!r} does not exist; check the name",
              file=sys.stderr)  # fmt: skip
        return 1
    except ReadStalled as exc:
        print(f"error: --from: {exc}", file=sys.stderr)
        return 1
    c = summary.counts
    print(
        f"# {summary.events + summary.undecodable} record(s) read, "
        f"{summary.undecodable} undecodable; "
        f"{c['added']} added, {c['removed']} removed, {c['changed']} changed, "
        f"{c['error']} error(s), {c['same']} unchanged. Nothing was sent or committed."
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `catalog` and its subcommands to `sub`."""
    cat = sub.add_parser("catalog", help="check, dry-run, diff and publish rule catalogs")
    csub = cat.add_subparsers(dest="catalog_command", required=True)
    check = csub.add_parser("check", help="validate a catalog; exits 1 listing every problem")
    check.add_argument("dir")
    check.set_defaults(handler=_check)

    test = csub.add_parser("test", help="dry run: print what an event would produce; sends nothing")
    test.add_argument("dir")
    test.add_argument("--event", required=True, help="JSON file (or -): a CloudEvent or a list")
    test.add_argument("--type", help="event type for bare JSON events (default: file name)")
    test.add_argument(
        "--locale", action="append", help="render for this locale (repeatable; default: all)"
    )
    test.add_argument("--now", help="ISO time the rules see as `now` (default: the clock)")
    test.set_defaults(handler=_test)

    pub = csub.add_parser("publish", help="check a catalog and put it on the catalog topic")
    pub.add_argument("dir")
    pub.add_argument("--topic", default=DEFAULT_CATALOG_TOPIC)
    pub.add_argument("--key", default=DEFAULT_CATALOG_KEY, help="catalog name (record key)")
    pub.set_defaults(handler=_publish)

    diff = csub.add_parser("diff", help="replay past events under two catalogs; sends nothing")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument(
        "--from",
        dest="from_",
        required=True,
        help="TOPIC@OFFSET (every partition) or TOPIC@ISO-TIMESTAMP",
    )
    diff.add_argument("--limit", type=int, default=1000, help="events to read at most")
    diff.add_argument("--locale", action="append", help="compare these locales only")
    diff.add_argument("--now", help="`now` for the rules (default: each record's timestamp)")
    diff.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    diff.set_defaults(handler=_diff)
