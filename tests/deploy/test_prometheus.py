"""deploy/prometheus and deploy/grafana: the alert rules check and pass their unit tests, every
alert is tested firing and quiet and has a runbook, and the dashboard's PromQL parses and names
only metrics tidings exports.

promtool comes from `bash scripts/promtool.sh` (Debian's prometheus package, unpacked under
.local/tools); without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yaml"
DASHBOARD = ROOT / "deploy/grafana/tidings.json"
RUNBOOKS = ROOT / "docs/alerts.md"

# The metrics contract (streams/observe/metric_defs.py): every name a rule or panel may use.
COUNTERS = (
    "tidings_records_consumed_total",
    "tidings_records_produced_total",
    "tidings_events_routed_total",
    "tidings_notifications_total",
    "tidings_sends_total",
    "tidings_retries_parked_total",
    "tidings_dead_letters_total",
    "tidings_claims_taken_over_total",
    "tidings_transactions_total",
)
HISTOGRAMS = ("tidings_send_duration_seconds", "tidings_event_to_sent_seconds")
GAUGES = (
    "tidings_breaker_state",
    "tidings_in_flight_records",
    "tidings_paused_partitions",
    "tidings_consumer_lag",
    "tidings_ready",
    "tidings_catalog_info",
    "tidings_build_info",
)
KNOWN_SERIES = frozenset(
    [*COUNTERS, *GAUGES, *(h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count"))]
)

# What the dashboard's template variables and Grafana's interval variables stand for when an
# expression is checked.
TEMPLATE_VALUES = {"stage": "deliver", "channel": "email"}
INTERVAL_VALUE = "5m"
SEVERITIES = {"critical", "warning", "info"}


# --- PromQL: the metric names an expression selects -------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier not part of a number or duration (`10m`, `1e3`) and not a function call.
_IDENT = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (strings, matchers, ranges and grouping
    clauses removed first, so label names and values don't count)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str) -> str:
    """An expression with Grafana's variables replaced by concrete values."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.startswith("__"):
            assert name in {"__rate_interval", "__interval", "__range"}, name
            return INTERVAL_VALUE
        assert name in TEMPLATE_VALUES, f"unknown template variable ${name} in {expr!r}"
        return TEMPLATE_VALUES[name]

    return _VAR.sub(value, expr)


def test_metric_names_parses_what_the_files_use() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (channel, le) "
        '(rate(tidings_event_to_sent_seconds_bucket{channel=~"a|b"}[5m])))'
        " > 60 and on () sum(x_total offset 10m) / count(y) or vector(0) > bool 1e3"
    )
    assert metric_names(expr) == {"tidings_event_to_sent_seconds_bucket", "x_total", "y"}
    assert metric_names('label_replace(up, "job", "$1", "instance", "(.*)")') == {"up"}
    assert metric_names("sum(rate(a[5m])) by (stage)") == {"a"}
    assert substitute('rate(m{stage=~"$stage",channel=~"${channel}"}[$__rate_interval])') == (
        'rate(m{stage=~"deliver",channel=~"email"}[5m])'
    )


# --- promtool ------------------------------------------------------------------------------------


def promtool() -> Path:
    """.local/tools/bin/promtool; a test that needs it fails (never skips) when it is missing."""
    local = Path(os.environ.get("TIDINGS_LOCAL_DIR") or ROOT / ".local")
    path = local / "tools/bin/promtool"
    if not os.access(path, os.X_OK):
        pytest.fail(f"promtool is missing ({path}): run `bash scripts/promtool.sh` first")
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool()), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_alert_rules_check() -> None:
    done = run_promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_unit_tests() -> None:
    done = run_promtool("test", "rules", ALERTS_TEST)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the alert rules -----------------------------------------------------------------------------


def _alerts() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    alerts = [rule for rule in rules if "alert" in rule]
    assert alerts
    return alerts


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = _anchors(RUNBOOKS.read_text(encoding="utf-8"))
    names = [a["alert"] for a in _alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for alert in _alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        url = annotations.get("runbook_url", "")
        assert url == f"docs/alerts.md#{name.lower()}", (name, url)
        assert url.split("#", 1)[1] in anchors, f"docs/alerts.md has no heading for {name}"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    data = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in data["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fires == set(), "alerts with no test where they fire"
    assert names - quiet == set(), "alerts with no test where they stay quiet"
    assert (fires | quiet) - names == set(), "tests of alerts that don't exist"


def test_alert_expressions_use_known_metrics() -> None:
    for alert in _alerts():
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= KNOWN_SERIES, (alert["alert"], names - KNOWN_SERIES)


# --- the dashboard -------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _exprs() -> list[tuple[str, str]]:
    """(panel title / refId, expression) of every target of every panel."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_dashboard_basics() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in TEMPLATE_VALUES:
        assert variables[name]["datasource"]["uid"] == "${datasource}", name
    ids = [panel["id"] for panel in _panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_queries_the_datasource_variable() -> None:
    panels = [p for p in _panels(_dashboard()["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, title
        assert panel.get("targets"), f"panel {title!r} has no target"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), title
            assert target["datasource"]["uid"] == "${datasource}", title


def test_dashboard_uses_only_known_metrics() -> None:
    used: set[str] = set()
    for where, expr in _exprs():
        names = metric_names(substitute(expr))
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= KNOWN_SERIES, (where, names - KNOWN_SERIES)
        used |= names
    # Every metric of the contract is on the dashboard (a histogram by any of its series).
    shown = {
        re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith(HISTOGRAMS) else n for n in used
    }
    assert set(COUNTERS + HISTOGRAMS + GAUGES) - shown == set()


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    rules = [
        {"record": f"tidings_dashboard:expr_{i}", "expr": substitute(expr)}
        for i, (_, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run_promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
