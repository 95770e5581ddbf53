"""Metrics, health and traces of real stage processes against the real stack.

- a live scrape of a running pipeline passes Prometheus' own `promtool check metrics`, and
  its counters move by exactly what this test's events did;
- `/readyz` turns 503 when Postgres goes away (and back to 200), `/healthz` stays 200;
- a supervisor (`tidings run` with several stage processes) serves one endpoint for all;
- an event produced with a `traceparent` comes out as one trace at a real OTLP/HTTP
  receiver: route, publish, deliver and the provider call, linked parent to child.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import TidingsSettings
from streams.dev.demo import encode
from tests.integration.pipeline import ROOT, World, read_committed, wait_until
from tests.integration.tcp_proxy import StoppableProxy
from tests.peers.otlp import OtlpReceiver

PROMTOOL = ROOT / ".local/tools/bin/promtool"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _endpoint(metrics: Any) -> str:
    wait_until(lambda: metrics.endpoint is not None, 30, "the metrics endpoint")
    return str(metrics.endpoint)


def test_a_live_scrape_passes_promtool_and_counts_this_tests_events(
    make_world_with: Callable[..., World],
) -> None:
    assert PROMTOOL.exists(), "promtool missing: run `bash scripts/promtool.sh` (make tools)"
    w = make_world_with(extra=lambda _port: {"observe": {"port": 0, "lag_interval_s": 0.5}})
    with w.pipeline() as metrics:
        url = _endpoint(metrics)
        wait_until(lambda: _get(f"{url}/readyz")[0] == 200, 60, "/readyz 200")
        before = _samples(_get(f"{url}/metrics")[1])
        w.send([(w.order_event(i), "structured") for i in range(5)])
        assert sum(w.wait_mail(5).values()) == 5

        def audited() -> bool:
            s = _samples(_get(f"{url}/metrics")[1])
            return _value(s, "tidings_records_consumed_total", stage="audit",
                          topic=w.settings.topics.status) >= 10  # fmt: skip

        wait_until(audited, 60, "the audit stage to read 10 statuses")
        code, text = _get(f"{url}/metrics")
    assert code == 200
    check = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    after = _samples(text)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    t = w.settings.topics
    assert delta("tidings_records_consumed_total", stage="route", topic=w.order_topic) == 5
    assert delta("tidings_records_produced_total", stage="route", topic=t.dispatch("email")) == 5
    assert delta("tidings_records_produced_total", stage="route", topic=t.status) == 5
    assert delta("tidings_events_routed_total", outcome="matched") == 5
    assert delta("tidings_notifications_total", channel="email", status="queued") == 5
    assert delta("tidings_notifications_total", channel="email", status="sent") == 5
    assert delta("tidings_sends_total", channel="email", outcome="sent") == 5
    assert delta("tidings_send_duration_seconds_count", channel="email") == 5
    assert delta("tidings_event_to_sent_seconds_count", channel="email") == 5
    assert delta("tidings_transactions_total", stage="route", outcome="commit") >= 1
    assert _value(after, "tidings_ready", stage="deliver") == 1
    assert _value(after, "tidings_breaker_state", provider="smtp") == 0  # closed
    assert any(n == "tidings_catalog_info" for n, _ in after), "catalog version info metric"
    # librdkafka statistics every 0.5 s: the route group's partitions are reported.
    lag = [ls for n, ls in after if n == "tidings_consumer_lag"
           and ("group", w.settings.groups.route) in ls]  # fmt: skip
    assert lag, "tidings_consumer_lag for the route group"


def test_readyz_turns_unready_while_postgres_is_away_and_healthz_stays_live(
    make_world_with: Callable[..., World], settings: TidingsSettings
) -> None:
    proxy = StoppableProxy(settings.postgres.host, settings.postgres.port)
    proxy.up()
    try:
        w = make_world_with(extra=lambda _port: {
            "observe": {"port": 0, "probe_interval_s": 0.3, "probe_timeout_s": 1.0},
            "postgres": {"host": "127.0.0.1", "port": proxy.port},
        })  # fmt: skip
        with w.pipeline(("audit",)) as metrics:
            url = _endpoint(metrics)
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, 60, "/readyz 200")
            proxy.down()
            wait_until(lambda: _get(f"{url}/readyz")[0] == 503, 30, "/readyz 503")
            code, body = _get(f"{url}/readyz")
            assert code == 503 and "postgres" in body, body
            assert _get(f"{url}/healthz")[0] == 200, "waiting out an outage is alive"
            scraped = _samples(_get(f"{url}/metrics")[1])
            assert _value(scraped, "tidings_ready", stage="audit") == 0
            proxy.up()
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, 60, "/readyz 200 again")
    finally:
        proxy.down()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_supervisor_serves_one_endpoint_for_all_its_stage_processes(world: World) -> None:
    port = _free_port()
    log = world.tmp / "supervisor.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "--config", str(world.config), "run",
             "--stage", "route", "--stage", "audit"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TIDINGS_OBSERVE__PORT": str(port)},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{url}/readyz")[0] == 200, 90, "the supervisor's /readyz 200")
        assert _get(f"{url}/healthz")[0] == 200
        code, text = _get(f"{url}/metrics")
        assert code == 200
        workers = {dict(ls).get("worker") for n, ls in _samples(text) if n == "tidings_ready"}
        assert workers == {"route", "audit"}, text[:2000]
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
    assert rc == 0, log.read_text()[-3000:]


def test_an_event_with_a_traceparent_comes_out_as_one_trace(
    make_world_with: Callable[..., World],
) -> None:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        # Ratio 0: only the incoming traceparent's sampled flag can make this trace.
        w = make_world_with(extra=lambda _port: {"observe": {
            "port": 0, "otlp_endpoint": receiver.endpoint, "trace_sample_ratio": 0.0}})  # fmt: skip
        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        with w.pipeline():
            doc = w.order_event(1)
            value, headers = encode(doc, "structured")
            p = w.producer()
            tp = ("traceparent", f"00-{trace_id}-{parent}-01".encode())
            p.produce(w.order_topic, value=value, key=b"order-1", headers=[*headers, tp])
            assert p.flush(30) == 0
            assert sum(w.wait_mail(1).values()) == 1
            names = ("process", "publish", "send")
            wait_until(lambda: len(receiver.trace(trace_id)) >= 4, 60, "4 spans of the trace")
            time.sleep(1.0)  # anything else of this trace would arrive with the same batch
        spans = {s.name: s for s in receiver.trace(trace_id)}
        t = w.settings.topics
        route = spans[f"process {w.order_topic}"]
        publish = spans[f"publish {t.dispatch('email')}"]
        deliver = spans[f"process {t.dispatch('email')}"]
        send = spans["send email"]
        assert len(receiver.trace(trace_id)) == 4, [s.name for s in receiver.trace(trace_id)]
        assert all(s.name.startswith(names) for s in spans.values())
        assert route.parent_span_id == parent and route.kind == "consumer"
        assert publish.parent_span_id == route.span_id and publish.kind == "producer"
        assert deliver.parent_span_id == publish.span_id and deliver.kind == "consumer"
        assert send.parent_span_id == deliver.span_id and send.kind == "client"
        assert route.attributes["messaging.system"] == "kafka"
        assert route.attributes["messaging.destination.name"] == w.order_topic
        assert route.attributes["messaging.kafka.message.key"] == "order-1"
        assert route.attributes["messaging.consumer.group.name"] == w.settings.groups.route
        assert isinstance(route.attributes["messaging.kafka.offset"], int)
        assert deliver.attributes["messaging.consumer.group.name"] == w.settings.groups.deliver
        assert deliver.resource["service.name"] == "tidings"
        # The status events carry the trace on: `queued` the route span, `sent` the deliver's.
        carried: dict[str, str] = {}
        for m in read_committed(w.settings, t.status, idle_s=2.0, timeout_s=30):
            hdrs = dict(m.headers() or [])
            status = json.loads(m.value())["data"]["status"]
            carried[status] = (hdrs.get("traceparent") or b"").decode()
        assert carried["queued"] == f"00-{trace_id}-{route.span_id}-01"
        assert carried["sent"] == f"00-{trace_id}-{deliver.span_id}-01"
    finally:
        receiver.close()
