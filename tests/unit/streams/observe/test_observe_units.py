"""Pure parts of streams.observe and the health bookkeeping of streams.runtime.Metrics."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import TopicSettings
from streams.observe import metric_defs
from streams.observe.consumer_stats import lag_from_stats
from streams.observe.logs import JsonFormatter
from streams.observe.merge import merge_expositions
from streams.observe.tracing import carried, context_of, span_headers
from streams.runtime.metrics import Metrics
from streams.runtime.output_metrics import OutputCounter
from streams.runtime.records import Out

_LABELS_ALLOWED = {"stage", "topic", "partition", "group", "channel", "provider", "status",
                   "outcome", "reason", "tier", "version", "generation"}  # fmt: skip


def test_every_metric_follows_prometheus_naming_with_bounded_labels() -> None:
    fams = list(metric_defs.REGISTRY.collect())
    assert len(fams) >= 18
    for fam in fams:
        assert fam.name.startswith("tidings_"), fam.name
        assert fam.documentation, f"{fam.name} has help text"
        if fam.type == "counter":
            assert not fam.name.endswith("_total"), "the family name drops _total"
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), f"{fam.name}: durations in base units"
    for obj in vars(metric_defs).values():
        if isinstance(obj, MetricWrapperBase):
            assert set(obj._labelnames) <= _LABELS_ALLOWED, f"unbounded label: {obj._labelnames}"


def _stats(parts: dict[str, Any]) -> dict[str, Any]:
    return {"topics": {"t": {"partitions": parts}}}


def test_lag_is_the_stable_end_minus_the_position_for_owned_partitions() -> None:
    doc = _stats({
        "0": {"fetch_state": "active", "ls_offset": 100, "hi_offset": 105, "app_offset": 90,
              "committed_offset": 50},
        "1": {"fetch_state": "active", "ls_offset": 10, "app_offset": -1, "committed_offset": 4},
        "2": {"fetch_state": "none", "ls_offset": 10, "app_offset": 3},
        "3": {"fetch_state": "active", "ls_offset": -1, "app_offset": -1, "committed_offset": -1},
        "-1": {"ls_offset": 7, "app_offset": 1},
    })  # fmt: skip
    assert lag_from_stats(doc) == {("t", 0): 10, ("t", 1): 6}
    assert lag_from_stats({"topics": "odd"}) == {}


def test_merged_expositions_label_every_series_with_its_worker() -> None:
    a = '# HELP x_total X.\n# TYPE x_total counter\nx_total{stage="route"} 3.0\n'
    b = '# HELP x_total X.\n# TYPE x_total counter\nx_total{stage="audit"} 4.0\n'
    text = merge_expositions({"route": a, "audit": b}).decode()
    got = {(s.labels["worker"], s.labels["stage"]): s.value
           for f in text_string_to_metric_families(text) for s in f.samples
           if s.name == "x_total"}  # fmt: skip
    assert got == {("route", "route"): 3.0, ("audit", "audit"): 4.0}
    assert text.count("# TYPE x_total counter") == 1


def test_outputs_are_counted_by_topic_status_reason_and_tier() -> None:
    topics = TopicSettings(status="u.status", dlq="u.dlq", retry_prefix="u.retry.")
    stage = f"unit-{time.monotonic_ns()}"

    def v(metric: Any, *labels: str) -> float:
        return float(metric.labels(*labels)._value.get())

    outs = [
        Out("u.status", b"{}", b"k", [("ce_type", b"notification.sent"),
                                     ("tidings-channel", b"sms-unit")]),
        Out("u.status", b"{}", b"k", [("ce_type", b"notification.sent"),
                                     ("tidings-channel", b"sms-unit")]),
        Out("u.dlq", b"x", None, [("tidings-dlq-reason", b"reason-unit")]),
        Out("u.retry.10s", b"x", None, [("tidings-channel", b"sms-unit")]),
    ]  # fmt: skip
    OutputCounter(stage, topics).produced(outs)
    assert v(metric_defs.RECORDS_PRODUCED, stage, "u.status") == 2
    assert v(metric_defs.NOTIFICATIONS, "sms-unit", "sent") == 2
    assert v(metric_defs.DEAD_LETTERS, stage, "reason-unit") == 1
    assert v(metric_defs.RETRIES_PARKED, "sms-unit", "10s") == 1


def test_health_needs_every_stage_to_beat_and_nothing_down() -> None:
    m = Metrics()
    m.expect("route")
    m.expect("audit")
    ok, why = m.readiness()
    assert not ok and "route: starting" in why and "audit: starting" in why
    m.beat("route")
    m.beat("audit")
    assert m.readiness() == (True, "ok")
    m.set_down("audit:postgres", True)
    ok, why = m.readiness()
    assert not ok and "audit: postgres unreachable" in why
    assert m.stage_ready("route") and not m.stage_ready("audit")
    m.set_down("audit:postgres", False)
    m.also_down(lambda: ["redis"])
    assert m.readiness() == (False, "redis unreachable (probe)")
    assert m.liveness(3600.0) == (True, "ok")
    time.sleep(0.01)
    ok, why = m.liveness(0.001)
    assert not ok and "no progress for" in why


def test_json_log_lines_carry_the_record_fields_and_the_trace() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    record = logging.LogRecord("streams.x", logging.WARNING, __file__, 1, "hello %s", ("you",),
                               None)  # fmt: skip
    record.topic, record.partition, record.offset = "orders", 2, 41
    with tracer.start_as_current_span("s") as span:
        doc = json.loads(JsonFormatter("deliver#1").format(record))
    assert doc["message"] == "hello you" and doc["level"] == "WARNING"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("orders", 2, 41)
    assert doc["process"] == "deliver#1"
    assert doc["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_trace_context_is_read_from_w3c_and_cloudevents_headers_and_written_back() -> None:
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert carried([("ce_traceparent", tp), ("x", None)]) == {"traceparent": tp.decode()}
    assert carried([("traceparent", tp), ("ce_traceparent", b"other")]) == {
        "traceparent": tp.decode()
    }
    assert context_of([("other", b"1")]) is None
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("child", context=context_of([("traceparent", tp)]))
    (name, value), *_ = span_headers(span)
    assert name == "traceparent"
    assert value.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert not value.endswith(b"00f067aa0ba902b7-01"), "names the child as the parent"
