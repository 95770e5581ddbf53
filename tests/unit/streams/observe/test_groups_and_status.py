"""`tidings status`'s pure half: lag from offsets, the exit code, the text and JSON output."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.cli.main import main
from streams.cli.status import (
    DlqCount,
    MetricsView,
    StatusReport,
    exit_code,
    parse_metrics,
    problems,
    render,
    retry_depth,
    to_json,
)
from streams.observe.groups import GroupMember, GroupStatus, LagRow, lag_rows

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
EVENTS = "order.created"
RETRY = ("notification.retry.1s", "notification.retry.10s")


# ---------------------------------------------------------------- lag


def test_lag_is_high_minus_committed() -> None:
    [row] = lag_rows([(EVENTS, 0)], {(EVENTS, 0): 40}, {(EVENTS, 0): (0, 100)})
    assert (row.committed, row.high, row.lag) == (40, 100, 60)


def test_no_committed_offset_counts_from_the_low_watermark() -> None:
    rows = lag_rows(
        [(EVENTS, 0), (EVENTS, 1)],
        {(EVENTS, 1): None},
        {(EVENTS, 0): (30, 100), (EVENTS, 1): (0, 5)},
    )
    assert [(r.committed, r.lag) for r in rows] == [(None, 70), (None, 5)]


def test_committed_below_the_low_watermark_counts_only_what_is_left() -> None:
    # Retention deleted records 0..49: a consumer resumes at 50 (auto.offset.reset=earliest).
    [row] = lag_rows([(EVENTS, 0)], {(EVENTS, 0): 10}, {(EVENTS, 0): (50, 80)})
    assert (row.committed, row.lag) == (10, 30)


def test_lag_is_never_negative() -> None:
    # Committed read after the watermarks: it may be ahead of the high watermark we saw.
    [row] = lag_rows([(EVENTS, 0)], {(EVENTS, 0): 105}, {(EVENTS, 0): (0, 100)})
    assert row.lag == 0


def test_rows_are_sorted_deduplicated_and_skip_partitions_without_watermarks() -> None:
    marks = {(EVENTS, 1): (0, 1), (EVENTS, 0): (0, 2), ("a", 3): (0, 0)}
    rows = lag_rows([(EVENTS, 1), (EVENTS, 0), (EVENTS, 1), ("gone", 0), ("a", 3)], {}, marks,
                    {(EVENTS, 0): "m-1"})  # fmt: skip
    assert [(r.topic, r.partition, r.owner) for r in rows] == [
        ("a", 3, None), (EVENTS, 0, "m-1"), (EVENTS, 1, None),
    ]  # fmt: skip


# ---------------------------------------------------------------- exit code


def _group(name: str, lag: int, members: int = 0, topic: str = EVENTS) -> GroupStatus:
    ms = tuple(
        GroupMember(f"m-{i}", "tidings", "/127.0.0.1", f"box-{i}", ((topic, i),))
        for i in range(members)
    )
    rows = (LagRow(topic, 0, 10, 0, 10 + lag, lag, "m-0" if members else None),)
    return GroupStatus(name, (topic,), "stable" if members else "empty", ms, rows)


@pytest.mark.parametrize(
    ("lag", "members", "code"),
    [(1001, 0, 1), (1000, 0, 0), (0, 0, 0), (10**9, 1, 0), (10**9, 3, 0)],
)
def test_exit_1_only_for_a_group_without_members_above_max_lag(
    lag: int, members: int, code: int
) -> None:
    groups = [("route", _group("tidings-route", lag, members)), ("audit", _group("a", 0, 1))]
    assert exit_code(groups, 1000) == code
    assert len(problems(groups, 1000)) == code


def test_the_problem_line_names_the_group_and_the_fix() -> None:
    [line] = problems([("deliver", _group("tidings-deliver", 5000))], 1000)
    assert "tidings-deliver" in line and "5000 > 1000" in line
    assert "tidings run --stage deliver" in line


# ---------------------------------------------------------------- output


def _report(**kw: object) -> StatusReport:
    deliver = GroupStatus(
        "tidings-deliver", ("notification.dispatch.email", *RETRY), "empty", (),
        (
            LagRow("notification.dispatch.email", 0, 7, 0, 12, 5),
            LagRow("notification.dispatch.email", 1, None, 0, 0, 0),
            LagRow("notification.dispatch.email", 2, None, 0, 0, 0),
            LagRow(RETRY[0], 0, None, 0, 3, 3),
            LagRow(RETRY[0], 1, 4, 0, 6, 2),
        ),
        missing_topics=(RETRY[1],),
    )  # fmt: skip
    route = GroupStatus(
        "tidings-route", (EVENTS,), "stable",
        (GroupMember("tidings-abc", "tidings", "/10.0.0.7", "box-0", ((EVENTS, 0),)),),
        (LagRow(EVENTS, 0, 120, 0, 120, 0, "tidings-abc"),),
    )  # fmt: skip
    base: dict[str, object] = {
        "bootstrap": "127.0.0.1:19092", "at": T0,
        "groups": (("route", route), ("deliver", deliver)), "retry_topics": RETRY,
        "dlq": DlqCount("notification.dlq", 7, {"invalid_event": 4, "no_provider": 2}, 6,
                        truncated="--dlq-max 6"),
        "metrics": None, "max_lag": 1000,
    }  # fmt: skip
    base.update(kw)
    return StatusReport(**base)  # type: ignore[arg-type]


def test_render_shows_groups_members_partitions_and_lag() -> None:
    text = render(_report())
    assert "route · group tidings-route: stable, 1 member, 1 partition assigned, lag 0" in text
    assert "member 1: client tidings  host /10.0.0.7  instance box-0" in text
    row = next(line for line in text.splitlines() if "notification.dispatch.email" in line
               and " 0 " in line and "none" not in line)  # fmt: skip
    assert row.split()[-4:] == ["7", "12", "5", "-"]
    assert any(line.split()[-5:] == ["0", "120", "120", "0", "1"] for line in text.splitlines())
    # A partition never committed shows "none"; idle ones are folded into one line.
    assert any(line.split()[1:4] == ["0", "none", "3"] for line in text.splitlines())
    assert "2 idle partitions hidden" in text
    assert RETRY[1] in text.split("missing topics")[1]
    assert text.splitlines()[-1] == "ok (--max-lag 1000)"


def test_render_all_partitions_lists_the_idle_ones_too() -> None:
    text = render(_report(), all_partitions=True)
    assert "hidden" not in text
    assert sum("notification.dispatch.email" in line for line in text.splitlines()) == 3


def test_render_flags_a_group_without_members_above_max_lag() -> None:
    text = render(_report(max_lag=5))
    assert "lag 10  <- no members" in text
    assert text.splitlines()[-1].startswith("PROBLEM deliver: group tidings-deliver")


def test_retry_depth_is_what_deliver_has_not_consumed_per_retry_topic() -> None:
    assert retry_depth(_report()) == [(RETRY[0], 5), (RETRY[1], None)]
    text = render(_report())
    assert f"{RETRY[0]}   5" in text and f"{RETRY[1]}  missing" in text
    assert retry_depth(_report(groups=(("route", _group("r", 0, 1)),))) == []


def test_render_dlq_by_reason_says_when_the_count_was_truncated() -> None:
    text = render(_report())
    assert "dead letters · notification.dlq: 6 counted of about 7 in the topic" in text
    assert "invalid_event  4" in text and "no_provider    2" in text
    assert "TRUNCATED by --dlq-max 6: only the oldest 6 were counted" in text
    whole = render(_report(dlq=DlqCount("notification.dlq", 3, {"smtp_550": 3}, 3)))
    assert "dead letters · notification.dlq: 3\n  smtp_550  3" in whole
    assert "TRUNCATED" not in whole
    assert "topic missing" in render(_report(dlq=DlqCount("notification.dlq", None)))


def test_parse_metrics_keeps_each_providers_worst_state_and_readiness() -> None:
    text = """# TYPE tidings_breaker_state gauge
tidings_breaker_state{provider="smtp",worker="0"} 0
tidings_breaker_state{provider="smtp",worker="1"} 2
tidings_breaker_state{provider="twilio",worker="0"} 1
tidings_breaker_state{provider="fcm"} 0
# TYPE tidings_ready gauge
tidings_ready{stage="deliver",worker="0"} 1
tidings_ready{stage="deliver",worker="1"} 0
tidings_ready{stage="route"} 1
other_metric 3
"""
    breakers, ready = parse_metrics(text)
    assert breakers == {"smtp": 2, "twilio": 1, "fcm": 0}
    assert ready == {"deliver": (1, 2), "route": (1, 1)}
    with pytest.raises(ValueError):
        parse_metrics("<html>not metrics</html>")


def test_render_breakers_and_readiness() -> None:
    breakers = {"smtp": 2, "fcm": 0, "twilio": 1}
    ready = {"deliver": (1, 2), "route": (1, 1)}
    m = MetricsView(("http://h:9100/metrics",), breakers, ready, ("cannot read http://x: refused",))
    text = render(_report(metrics=m))
    section = text.split("breakers · http://h:9100/metrics\n")[1]
    assert section.startswith("  fcm     closed\n  smtp    open\n  twilio  half-open\nready\n")
    assert "deliver  NOT READY (1 of 2)" in section and "route    ready" in section
    assert "cannot read http://x: refused" in section


def test_json_has_every_partition_and_the_exit_code() -> None:
    doc = json.loads(json.dumps(to_json(_report(max_lag=5))))
    deliver = doc["groups"][1]
    assert deliver["group"] == "tidings-deliver" and deliver["lag"] == 10
    assert len(deliver["partitions"]) == 5 and deliver["partitions"][1]["committed"] is None
    assert doc["retry"] == [{"topic": RETRY[0], "depth": 5}, {"topic": RETRY[1], "depth": None}]
    assert doc["dlq"]["truncated"] == "--dlq-max 6"
    assert doc["exit_code"] == 1 and len(doc["problems"]) == 1
    assert doc["at"] == "2026-05-01T12:00:00Z"


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-lag", "lots"],
        ["--max-lag", "-1"],
        ["--timeout", "0"],
        ["--metrics", "h:9100"],
        ["--stage", "nope"],
        ["--dlq-seconds", "x"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["status", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err
