"""`tidings status` against the real broker, on uuid-named topics and groups."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.runtime.dead_letter import dead_letter

pytestmark = pytest.mark.integration

N0, N1, K = 30, 20, 12  # records on partitions 0 and 1; offset committed on partition 0


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["status", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _produce(settings: TidingsSettings, topic: str, counts: dict[int, int]) -> None:
    p = Producer(settings.kafka.client_config())
    for partition, n in counts.items():
        for i in range(n):
            p.produce(topic, value=f"r{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def _commit(settings: TidingsSettings, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit `offset` for `group` from a consumer that never joins it (assign, no subscribe)."""
    c = Consumer({**settings.kafka.client_config(), "group.id": group,
                  "enable.auto.commit": False})  # fmt: skip
    try:
        c.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    finally:
        c.close()


@pytest.fixture
def events(
    make_topic: Callable[..., str], settings: TidingsSettings, unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:  # fmt: skip
    """An events topic with N0 + N1 records, the route group K behind on partition 0 and
    never committed on partition 1; the DLQ points at an empty topic of this test."""
    topic = make_topic("status", partitions=2)
    group = f"test-status-{unique}"
    _produce(settings, topic, {0: N0, 1: N1})
    _commit(settings, group, topic, 0, K)
    monkeypatch.setenv("TIDINGS_GROUPS__ROUTE", group)
    monkeypatch.setenv("TIDINGS_TOPICS__EVENTS", json.dumps([topic]))
    monkeypatch.setenv("TIDINGS_TOPICS__DLQ", make_topic("dlq", partitions=1))
    return topic, group


def _row(out: str, topic: str, partition: int) -> list[str]:
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == topic and f[1] == str(partition):
            return f
    raise AssertionError(f"no row for {topic}/{partition} in:\n{out}")


def test_lag_of_a_group_without_members_and_the_exit_code(
    events: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic, group = events
    lag = N0 - K + N1  # N - k: partition 1 has no committed offset, so all of it is due
    rc, out, err = status(capsys, "--stage", "route", "--max-lag", str(lag - 1))
    assert rc == 1, out + err
    assert f"route · group {group}: empty, 0 members, 0 partitions assigned, lag {lag}" in out
    assert _row(out, topic, 0)[2:5] == [str(K), str(N0), str(N0 - K)]
    assert _row(out, topic, 1)[2:5] == ["none", str(N1), str(N1)]
    assert f"PROBLEM route: group {group} has no members and lag {lag} > {lag - 1}" in out

    rc, out, err = status(capsys, "--stage", "route", "--max-lag", str(lag))
    assert rc == 0, out + err
    assert out.splitlines()[-1] == f"ok (--max-lag {lag})"
    assert status(capsys, "--stage", "route")[0] == 0  # default --max-lag 1000

    rc, out, err = status(capsys, "--stage", "route", "--max-lag", "0", "--json")
    assert rc == 1, err
    doc = json.loads(out)
    [g] = doc["groups"]
    assert (g["group"], g["state"], g["lag"], g["members"]) == (group, "empty", lag, [])
    assert [(p["partition"], p["committed"], p["high"], p["lag"]) for p in g["partitions"]] == [
        (0, K, N0, N0 - K), (1, None, N1, N1),
    ]  # fmt: skip
    assert doc["exit_code"] == 1 and doc["dlq"]["total"] == 0


def test_a_live_member_is_shown_and_keeps_the_exit_code_0(
    events: tuple[str, str], settings: TidingsSettings, unique: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    topic, group = events
    client = f"status-test-{unique}"
    c = Consumer({**settings.kafka.client_config(), "group.id": group, "client.id": client,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(c.assignment()) < 2 and time.monotonic() < deadline:
            c.poll(0.2)
        assert len(c.assignment()) == 2, "the consumer never got its partitions"
        rc, out, err = status(capsys, "--stage", "route", "--max-lag", "0")
        assert rc == 0, out + err  # lag above --max-lag, but someone is working on it
        assert f"route · group {group}: stable, 1 member, 2 partitions assigned" in out
        assert f"member 1: client {client}  host /127.0.0.1" in out
        assert _row(out, topic, 0)[-1] == "1" and _row(out, topic, 1)[-1] == "1"
    finally:
        c.close()


def test_dead_letters_are_counted_by_reason_within_the_bound(
    events: tuple[str, str], settings: TidingsSettings, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, make_topic: Callable[..., str],
) -> None:  # fmt: skip
    dlq = make_topic("dlq", partitions=1)
    monkeypatch.setenv("TIDINGS_TOPICS__DLQ", dlq)
    p = Producer(settings.kafka.client_config())
    for reason in ("smtp_550", "no-provider", "smtp_550", "no_provider", "smtp_550"):
        dl = dead_letter(
            dlq, topic="notification.dispatch.email", partition=0, offset=1, timestamp_ms=1,
            key=None, value=b"{}", headers=None, error=RuntimeError("x"), stage="deliver",
            reason=reason,
        )  # fmt: skip
        p.produce(dl.topic, value=dl.value, headers=list(dl.headers))
    assert p.flush(30) == 0

    rc, out, err = status(capsys, "--stage", "route")
    assert rc == 0, out + err
    section = out.split(f"dead letters · {dlq}: 5\n")[1]
    assert section.startswith("  smtp_550     3\n  no_provider  2\n"), out  # one spelling
    assert "TRUNCATED" not in out

    rc, out, err = status(capsys, "--stage", "route", "--dlq-max", "2")
    assert f"dead letters · {dlq}: 2 counted of about 5 in the topic" in out
    assert "TRUNCATED by --dlq-max 2: only the oldest 2 were counted" in out
    assert "  no_provider  1\n  smtp_550     1\n" in out


def test_retry_depth_is_what_deliver_has_not_consumed(
    settings: TidingsSettings, kafka_admin: AdminClient, unique: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    prefix = f"test.retry.{unique}."
    retry = f"{prefix}10s"
    kafka_admin.create_topics([NewTopic(retry, 1, 1)], operation_timeout=30)[retry].result(30)
    try:
        group = f"test-status-deliver-{unique}"
        monkeypatch.setenv("TIDINGS_TOPICS__RETRY_PREFIX", prefix)
        monkeypatch.setenv("TIDINGS_TOPICS__DISPATCH_PREFIX", f"test.nodispatch.{unique}.")
        monkeypatch.setenv("TIDINGS_RUNTIME__RETRY_TIERS_S", "[10, 60]")
        monkeypatch.setenv("TIDINGS_GROUPS__DELIVER", group)
        _produce(settings, retry, {0: 9})
        _commit(settings, group, retry, 0, 4)
        rc, out, err = status(capsys, "--stage", "deliver", "--max-lag", "4")
        assert rc == 1, out + err
        depth = out.split("retry topics (records the deliver group has not consumed yet)\n")[1]
        assert depth.startswith(f"  {prefix}10s  5\n  {prefix}60s  missing\n"), out
    finally:
        kafka_admin.delete_topics([retry], operation_timeout=30)[retry].result(30)


EXPOSITION = b"""# HELP tidings_breaker_state 0 closed, 1 half-open, 2 open
# TYPE tidings_breaker_state gauge
tidings_breaker_state{provider="smtp",worker="0"} 0
tidings_breaker_state{provider="smtp",worker="1"} 2
tidings_breaker_state{provider="twilio",worker="0"} 1
# TYPE tidings_ready gauge
tidings_ready{stage="deliver",worker="0"} 1
tidings_ready{stage="deliver",worker="1"} 0
"""


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """http://127.0.0.1:PORT: /metrics serves EXPOSITION, anything else 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/metrics"
            body = EXPOSITION if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    t.join(5)


def test_breakers_and_readiness_come_from_the_metrics_endpoint(
    events: tuple[str, str], metrics_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{metrics_url}/metrics"
    rc, out, err = status(capsys, "--stage", "route", "--metrics", url)
    assert rc == 0, out + err
    section = out.split(f"breakers · {url}\n")[1]
    assert section.startswith("  smtp    open\n  twilio  half-open\nready\n"), out
    assert "  deliver  NOT READY (1 of 2)" in section

    rc, out, err = status(capsys, "--stage", "route", "--metrics", f"{metrics_url}/nope",
                          "--json")  # fmt: skip
    assert rc == 0  # an unreadable endpoint is reported, not a failed status
    assert "HTTP 404" in json.loads(out)["metrics"]["errors"][0]
    assert err.startswith("warning: cannot read")


def test_unreachable_kafka_is_one_error_line_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    t0 = time.monotonic()
    rc, out, err = status(capsys, "--timeout", "2")
    assert rc == 1 and out == ""
    assert time.monotonic() - t0 < 10
    assert err.startswith("error: Kafka at 127.0.0.1:1 did not answer within 2 s")
    assert "tidings doctor" in err and len(err.strip().splitlines()) == 1
