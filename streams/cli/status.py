"""`tidings status`: the pipeline on one screen — groups and lag, retry depth, DLQ, breakers.

`collect` reads Kafka (and the metrics endpoints given); `render`, `to_json` and `exit_code`
are pure functions of what it collected, so the output is unit-tested without a broker.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog import KNOWN_CHANNELS
from schemas.codes import canonical
from schemas.settings import TidingsSettings
from streams.dlq.replay import DlqError, read_records
from streams.observe.groups import GroupReadError, GroupStatus, read_groups, watermarks
from streams.runtime.kafka import retry_topic, route_topics

__all__ = [
    "BREAKER_STATES",
    "STAGES",
    "DlqCount",
    "MetricsView",
    "StatusReport",
    "collect",
    "count_dlq",
    "exit_code",
    "parse_metrics",
    "problems",
    "register",
    "render",
    "retry_depth",
    "retry_topics",
    "stage_groups",
    "stage_topics",
    "to_json",
]

STAGES = ("route", "deliver", "audit", "recipients")
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
_DEFAULT_MAX_LAG = 1000
_DEFAULT_TIMEOUT_S = 10.0
_DEFAULT_DLQ_MAX = 10_000
_DEFAULT_DLQ_SECONDS = 5.0


# ---------------------------------------------------------------- collected data


@dataclass(frozen=True, slots=True)
class DlqCount:
    """The dead-letter topic: its size and its records counted by `tidings-dlq-reason`.

    `total` is the records between the watermarks (None: the topic doesn't exist); it can
    exceed the dead letters by the transaction markers among them. `by_reason` covers the
    first `counted` records (oldest first); `truncated` says which bound stopped the scan,
    `error` why it failed (the counts so far are kept).
    """

    topic: str
    total: int | None
    by_reason: dict[str, int] = field(default_factory=dict)
    counted: int = 0
    truncated: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MetricsView:
    """What the metrics endpoints said: each provider's worst breaker state, readiness.

    `breakers`: provider → worst `tidings_breaker_state` over every endpoint and worker
    (0 closed, 1 half-open, 2 open). `ready`: stage → (samples at 1, samples). `errors`:
    one line per endpoint that could not be read or parsed.
    """

    urls: tuple[str, ...]
    breakers: dict[str, int] = field(default_factory=dict)
    ready: dict[str, tuple[int, int]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything `tidings status` shows; `groups` pairs each stage with its group."""

    bootstrap: str
    at: datetime
    groups: tuple[tuple[str, GroupStatus], ...]
    retry_topics: tuple[str, ...]
    dlq: DlqCount | None
    metrics: MetricsView | None
    max_lag: int


# ---------------------------------------------------------------- pure


def stage_groups(settings: TidingsSettings, stages: Iterable[str] = STAGES) -> dict[str, str]:
    """stage → its consumer group, for `stages` (settings.groups)."""
    return {st: str(getattr(settings.groups, st)) for st in stages}


def stage_topics(settings: TidingsSettings) -> dict[str, tuple[str, ...]]:
    """stage → the topics its group consumes, as the stages subscribe to them."""
    t = settings.topics
    return {
        "route": route_topics(settings),
        "deliver": tuple(t.dispatch(c) for c in KNOWN_CHANNELS) + retry_topics(settings),
        "audit": (t.status,),
        "recipients": (t.recipients,),
    }


def retry_topics(settings: TidingsSettings) -> tuple[str, ...]:
    """The retry topics, shortest delay tier first."""
    return tuple(retry_topic(settings, tier) for tier in settings.runtime.retry_tiers_s)


def problems(groups: Iterable[tuple[str, GroupStatus]], max_lag: int) -> list[str]:
    """One line per group that has no members while its lag is above `max_lag`; pure."""
    return [
        f"{stage}: group {g.group} has no members and lag {g.lag} > {max_lag}"
        f" (start it: `tidings run --stage {stage}`)"
        for stage, g in groups
        if not g.members and g.lag > max_lag
    ]


def exit_code(groups: Iterable[tuple[str, GroupStatus]], max_lag: int) -> int:
    """1 when a group has no members and lag above `max_lag`, else 0; pure."""
    return 1 if problems(groups, max_lag) else 0


def retry_depth(report: StatusReport) -> list[tuple[str, int | None]]:
    """(retry topic, records the deliver group has not consumed) — None: topic missing."""
    deliver = dict(report.groups).get("deliver")
    if deliver is None:
        return []
    out: list[tuple[str, int | None]] = []
    for topic in report.retry_topics:
        if topic in deliver.missing_topics:
            out.append((topic, None))
        else:
            out.append((topic, sum(r.lag for r in deliver.rows if r.topic == topic)))
    return out


def parse_metrics(text: str) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """(provider → worst breaker state, stage → (ready samples, samples)) of one exposition.

    Reads `tidings_breaker_state{provider}` and `tidings_ready{stage}` (any other label,
    such as `worker`, is folded in); raises ValueError when `text` is not Prometheus text.
    """
    from prometheus_client.parser import text_string_to_metric_families

    breakers: dict[str, int] = {}
    ready: dict[str, tuple[int, int]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tidings_breaker_state":
                p = s.labels.get("provider", "?")
                breakers[p] = max(breakers.get(p, 0), int(s.value))
            elif s.name == "tidings_ready":
                st = s.labels.get("stage", "process")
                up, n = ready.get(st, (0, 0))
                ready[st] = (up + (1 if s.value >= 1 else 0), n + 1)
    return breakers, ready


def _merge(view: MetricsView, text: str) -> MetricsView:
    breakers, ready = parse_metrics(text)
    b = dict(view.breakers)
    for p, v in breakers.items():
        b[p] = max(b.get(p, 0), v)
    r = dict(view.ready)
    for st, (up, n) in ready.items():
        u0, n0 = r.get(st, (0, 0))
        r[st] = (u0 + up, n0 + n)
    return MetricsView(view.urls, b, r, view.errors)


def _breaker(v: int) -> str:
    return BREAKER_STATES.get(v, f"unknown ({v})")


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render(report: StatusReport, *, all_partitions: bool = False) -> str:
    """The text `tidings status` prints; pure.

    Partitions never committed and with nothing to read are folded into one line unless
    `all_partitions`.
    """
    lines = [f"kafka {report.bootstrap}  at {report.at.strftime('%Y-%m-%d %H:%M:%S')} UTC"]
    for stage, g in report.groups:
        lines.append("")
        lines += _render_group(stage, g, report.max_lag, all_partitions)
    depth = retry_depth(report)
    if depth:
        lines += ["", "retry topics (records the deliver group has not consumed yet)"]
        width = max(len(t) for t, _ in depth)
        for topic, n in depth:
            lines.append(f"  {topic:<{width}}  {'missing' if n is None else n}")
    if report.dlq is not None:
        lines += ["", *_render_dlq(report.dlq)]
    if report.metrics is not None:
        lines += ["", *_render_metrics(report.metrics)]
    bad = problems(report.groups, report.max_lag)
    lines.append("")
    lines += [f"PROBLEM {p}" for p in bad] if bad else [f"ok (--max-lag {report.max_lag})"]
    return "\n".join(lines)


def _render_group(stage: str, g: GroupStatus, max_lag: int, all_partitions: bool) -> list[str]:
    flag = "  <- no members" if not g.members and g.lag > max_lag else ""
    lines = [
        f"{stage} · group {g.group}: {g.state}, {_n(len(g.members), 'member')}, "
        f"{_n(g.assigned, 'partition')} assigned, lag {g.lag}{flag}"
    ]
    index = {m.member_id: i for i, m in enumerate(g.members, 1)}
    for i, m in enumerate(g.members, 1):
        inst = f"  instance {m.instance_id}" if m.instance_id else ""
        lines.append(
            f"  member {i}: client {m.client_id}  host {m.host}{inst}  "
            f"{_n(len(m.partitions), 'partition')}  id {m.member_id}"
        )
    shown = [r for r in g.rows if all_partitions or r.committed is not None or r.lag > 0]
    if shown:
        tw = max(len("topic"), *(len(r.topic) for r in shown))
        lines.append(
            f"  {'topic':<{tw}}  {'part':>4}  {'committed':>10}  {'high':>10}  {'lag':>8}  member"
        )
        for r in shown:
            committed = "none" if r.committed is None else str(r.committed)
            owner = str(index.get(r.owner, "-")) if r.owner else "-"
            lines.append(
                f"  {r.topic:<{tw}}  {r.partition:>4}  {committed:>10}  {r.high:>10}  "
                f"{r.lag:>8}  {owner}"
            )
    hidden = len(g.rows) - len(shown)
    if hidden:
        lines.append(
            f"  ({_n(hidden, 'idle partition')} hidden: never committed, nothing to read; "
            "--all-partitions lists them)"
        )
    if g.missing_topics:
        lines.append(
            f"  missing topics (`tidings topics ensure` creates them): {len(g.missing_topics)}"
        )
        lines += _wrap(", ".join(g.missing_topics), "    ")
    return lines


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)  # fmt: skip


def _render_dlq(d: DlqCount) -> list[str]:
    head = f"dead letters · {d.topic}:"
    if d.total is None:
        return [f"{head} topic missing (`tidings topics ensure` creates it)"]
    if d.truncated or d.error:
        lines = [f"{head} {d.counted} counted of about {d.total} in the topic"]
    else:
        lines = [f"{head} {d.counted}"]
    if d.by_reason:
        width = max(len(r) for r in d.by_reason)
        for reason, n in sorted(d.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason:<{width}}  {n}")
    if d.truncated:
        lines.append(f"  TRUNCATED by {d.truncated}: only the oldest {d.counted} were counted")
    if d.error:
        lines.append(f"  could not count them all: {d.error}")
    return lines


def _render_metrics(m: MetricsView) -> list[str]:
    lines = [f"breakers · {', '.join(m.urls)}"]
    if m.breakers:
        width = max(len(p) for p in m.breakers)
        for p, v in sorted(m.breakers.items()):
            lines.append(f"  {p:<{width}}  {_breaker(v)}")
    elif not m.errors:
        lines.append("  (no tidings_breaker_state metric)")
    if m.ready:
        lines.append("ready")
        width = max(len(s) for s in m.ready)
        for st, (up, n) in sorted(m.ready.items()):
            word = "ready" if up == n else f"NOT READY ({n - up} of {n})"
            lines.append(f"  {st:<{width}}  {word}")
    lines += [f"  {e}" for e in m.errors]
    return lines


def to_json(report: StatusReport) -> dict[str, Any]:
    """`tidings status --json`: the same data as `render`, every partition; pure."""
    groups = []
    for stage, g in report.groups:
        groups.append(
            {
                "stage": stage,
                "group": g.group,
                "state": g.state,
                "lag": g.lag,
                "assigned_partitions": g.assigned,
                "missing_topics": list(g.missing_topics),
                "members": [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "instance_id": m.instance_id,
                        "partitions": [{"topic": t, "partition": p} for t, p in m.partitions],
                    }
                    for m in g.members
                ],
                "partitions": [
                    {
                        "topic": r.topic,
                        "partition": r.partition,
                        "committed": r.committed,
                        "low": r.low,
                        "high": r.high,
                        "lag": r.lag,
                        "member_id": r.owner,
                    }
                    for r in g.rows
                ],
            }
        )
    d = report.dlq
    m = report.metrics
    return {
        "kafka": report.bootstrap,
        "at": report.at.isoformat().replace("+00:00", "Z"),
        "max_lag": report.max_lag,
        "groups": groups,
        "retry": [{"topic": t, "depth": n} for t, n in retry_depth(report)],
        "dlq": None if d is None else {
            "topic": d.topic, "total": d.total, "by_reason": d.by_reason, "counted": d.counted,
            "truncated": d.truncated, "error": d.error,
        },
        "metrics": None if m is None else {
            "urls": list(m.urls),
            "breakers": {p: _breaker(v) for p, v in m.breakers.items()},
            "ready": {st: {"ready": up, "of": n} for st, (up, n) in m.ready.items()},
            "errors": list(m.errors),
        },
        "problems": problems(report.groups, report.max_lag),
        "exit_code": exit_code(report.groups, report.max_lag),
    }  # fmt: skip


# ---------------------------------------------------------------- collecting


def count_dlq(
    settings: TidingsSettings, *, max_records: int, max_seconds: float, timeout_s: float
) -> DlqCount:
    """Count the dead letters by reason, oldest first, within `max_records` and `max_seconds`.

    Blocks for at most about `max_seconds` reading (plus the watermark lookup, bounded by
    `timeout_s`). Raises GroupReadError only when the watermarks can't be read; a read that
    fails midway is reported in `DlqCount.error`.
    """
    topic = settings.topics.dlq
    marks = watermarks(settings, [topic], timeout_s=timeout_s)
    if not marks:
        return DlqCount(topic, None)
    total = sum(high - low for low, high in marks.values())
    if total == 0 or max_records == 0:
        return DlqCount(topic, total, truncated="--dlq-max 0" if total else None)
    counts: Counter[str] = Counter()
    n = 0
    truncated = error = None
    deadline = time.monotonic() + max_seconds
    it = read_records(settings, topic, missing_ok=True, idle_s=max_seconds)
    try:
        # A bound is only "hit" when one more dead letter is there to be counted.
        for dl in it:
            if n >= max_records:
                truncated = f"--dlq-max {max_records}"
                break
            if time.monotonic() >= deadline:
                truncated = f"--dlq-seconds {max_seconds:g}"
                break
            counts[canonical(dl.reason) if dl.reason else "(no reason header)"] += 1
            n += 1
    except DlqError as exc:
        if time.monotonic() >= deadline:
            truncated = f"--dlq-seconds {max_seconds:g}"
        else:
            error = str(exc)
    finally:
        close = getattr(it, "close", None)  # a generator: closing it closes its consumer
        if close is not None:
            close()
    return DlqCount(topic, total, dict(counts), n, truncated, error)


def read_metrics(urls: Sequence[str], timeout_s: float) -> MetricsView:
    """GET each URL (Prometheus text) and fold it into one view; blocks ≤ `timeout_s` each.

    Never raises: an endpoint that can't be read or parsed becomes a line in `errors`.
    """
    view = MetricsView(tuple(urls))
    errors: list[str] = []
    for url in urls:
        try:
            # http(s) only: --metrics is checked by _arg_url.
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                text = resp.read(16 * 1024 * 1024).decode("utf-8", "replace")
            view = _merge(view, text)
        except urllib.error.HTTPError as exc:
            errors.append(f"cannot read {url}: HTTP {exc.code} {exc.reason}; is it /metrics?")
        except (urllib.error.URLError, OSError) as exc:
            why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            errors.append(
                f"cannot read {url}: {why}; is the process running with its metrics endpoint?"
            )
        except ValueError as exc:
            errors.append(f"{url} did not answer Prometheus text: {exc}")
    return MetricsView(view.urls, view.breakers, view.ready, tuple(errors))


def collect(
    settings: TidingsSettings,
    *,
    stages: Sequence[str] = STAGES,
    max_lag: int = _DEFAULT_MAX_LAG,
    timeout_s: float = _DEFAULT_TIMEOUT_S,
    dlq_max: int = _DEFAULT_DLQ_MAX,
    dlq_seconds: float = _DEFAULT_DLQ_SECONDS,
    metrics_urls: Sequence[str] = (),
    now: datetime | None = None,
) -> StatusReport:
    """Read everything `tidings status` shows. Blocks: about twice `timeout_s` for the groups,
    as much again for the DLQ's watermarks, `dlq_seconds` for its scan and `timeout_s` per
    metrics URL. Raises GroupReadError when Kafka is unreachable or refuses a request.
    """
    groups = stage_groups(settings, stages)
    topics = stage_topics(settings)
    read = read_groups(settings, {groups[st]: topics[st] for st in stages}, timeout_s=timeout_s)
    paired = tuple(zip(stages, read, strict=True))
    dlq = count_dlq(settings, max_records=dlq_max, max_seconds=dlq_seconds, timeout_s=timeout_s)
    metrics = read_metrics(metrics_urls, timeout_s) if metrics_urls else None
    return StatusReport(
        bootstrap=settings.kafka.bootstrap_servers, at=now or datetime.now(UTC), groups=paired,
        retry_topics=retry_topics(settings), dlq=dlq, metrics=metrics, max_lag=max_lag,
    )  # fmt: skip


# ---------------------------------------------------------------- command


def _status(args: argparse.Namespace, s: TidingsSettings) -> int:
    stages = tuple(st for st in STAGES if st in set(args.stage)) if args.stage else STAGES
    try:
        report = collect(
            s, stages=stages, max_lag=args.max_lag, timeout_s=args.timeout,
            dlq_max=args.dlq_max, dlq_seconds=args.dlq_seconds, metrics_urls=args.metrics or (),
        )  # fmt: skip
    except GroupReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(report), indent=2, sort_keys=False))
        for e in report.metrics.errors if report.metrics else ():  # the text shows them
            print(f"warning: {e}", file=sys.stderr)
    else:
        print(render(report, all_partitions=args.all_partitions))
    return exit_code(report.groups, report.max_lag)


def _arg_count(flag: str) -> Any:
    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: give a whole number ≥ 0")
        return int(text)

    return parse


def _arg_seconds(flag: str) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = -1.0
        if not 0 < v <= 3600:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: give seconds, > 0 and ≤ 3600")
        return v

    return parse


def _arg_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"--metrics {text!r}: give an http(s) URL, e.g. http://127.0.0.1:9100/metrics"
        )
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `status` to `sub`."""
    p = sub.add_parser(
        "status",
        help="consumer groups, lag, retry depth, dead letters and breakers on one screen",
        description="Show each stage's consumer group (state, members, assigned partitions, "
        "committed offset, high watermark and lag per input partition), the retry topics' "
        "depth, the dead letters by reason, and with --metrics the breaker states. Exit 1 "
        "when a group has no members and its lag is above --max-lag, or Kafka can't be read.",
    )
    p.add_argument("--stage", action="append", choices=STAGES,
                   help="show only this stage's group (repeatable); default: all")  # fmt: skip
    p.add_argument("--max-lag", type=_arg_count("--max-lag"), default=_DEFAULT_MAX_LAG,
                   metavar="N", help="exit 1 when a group without members has more lag "
                   f"than N; default {_DEFAULT_MAX_LAG}")  # fmt: skip
    p.add_argument("--metrics", action="append", type=_arg_url, metavar="URL",
                   help="a running process's metrics endpoint (Prometheus text) to read "
                   "breaker states and readiness from (repeatable)")  # fmt: skip
    p.add_argument("--timeout", type=_arg_seconds("--timeout"), default=_DEFAULT_TIMEOUT_S,
                   metavar="S", help="bound on each Kafka and HTTP request, seconds; "
                   f"default {_DEFAULT_TIMEOUT_S:g}")  # fmt: skip
    p.add_argument("--dlq-max", type=_arg_count("--dlq-max"), default=_DEFAULT_DLQ_MAX,
                   metavar="N", help="count at most N dead letters by reason (0: only the "
                   f"total); default {_DEFAULT_DLQ_MAX}")  # fmt: skip
    p.add_argument("--dlq-seconds", type=_arg_seconds("--dlq-seconds"),
                   default=_DEFAULT_DLQ_SECONDS, metavar="S",
                   help=f"count for at most S s; default {_DEFAULT_DLQ_SECONDS:g}")  # fmt: skip
    p.add_argument("--all-partitions", action="store_true",
                   help="also list partitions never committed with nothing to read")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_status)
