"""`tidings dlq list | show | replay` against the real broker, on uuid-named topics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.dlq.replay import replayed_topic
from streams.runtime.dead_letter import dead_letter

pytestmark = pytest.mark.integration

HOUR_AGO_MS = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)


@dataclass
class Dlq:
    """One test's DLQ topic, origin topics, and the dead letters on it by name."""

    settings: TidingsSettings
    topic: str
    a: str  # origin topic with 3 partitions
    b: str  # origin topic with 1 partition
    ids: dict[str, str]

    def put(
        self, name: str, *, origin: str, partition: int, offset: int, stage: str, reason: str,
        key: bytes | None, value: bytes, headers: list[tuple[str, bytes | None]] | None = None,
        error: str = "550 mailbox unavailable", dlq_partition: int = 0,
        timestamp_ms: int | None = None,
    ) -> None:  # fmt: skip
        out = dead_letter(
            self.topic, topic=origin, partition=partition, offset=offset, timestamp_ms=123,
            key=key, value=value, headers=headers, error=RuntimeError(error), stage=stage,
            reason=reason,
        )  # fmt: skip
        p = Producer(self.settings.kafka.client_config())
        got: list[str] = []
        hdrs: list[tuple[str, str | bytes | None]] = list(out.headers)
        kw: dict[str, Any] = {"timestamp": timestamp_ms} if timestamp_ms else {}
        p.produce(
            out.topic, value=out.value, key=out.key, headers=hdrs, partition=dlq_partition,
            on_delivery=lambda err, m: got.append(f"{m.partition()}:{m.offset()}"), **kw,
        )  # fmt: skip
        assert p.flush(30) == 0 and len(got) == 1
        self.ids[name] = got[0]


def read(settings: TidingsSettings, topic: str) -> list[Any]:
    """Every committed record of `topic` (read_committed, like the stages), to the end."""
    c = Consumer({**settings.kafka.client_config(), "group.id": f"t-{os.urandom(4).hex()}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True})  # fmt: skip
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    left = set(parts)
    out: list[Any] = []
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        for m in c.consume(100, 0.2):
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                left.discard(m.partition())
    c.close()
    assert not left, f"could not read {topic} to its end"
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["dlq", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def dlq(
    make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch, settings: TidingsSettings,
    kafka_admin: AdminClient,
) -> Iterator[Dlq]:  # fmt: skip
    topic = make_topic("dlq", partitions=2)
    a, b = make_topic("origin-a", partitions=3), make_topic("origin-b", partitions=1)
    monkeypatch.setenv("TIDINGS_TOPICS__DLQ", topic)
    d = Dlq(settings, topic, a, b, {})
    d.put("a0", origin=a, partition=1, offset=10, stage="deliver", reason="smtp_550",
          key=b"ada@example.com", value=b'{"id": "n-a0", "channel": "email"}',
          headers=[("ce_type", b"order.created"), ("trace", b"1"), ("trace", b"2")],
          timestamp_ms=HOUR_AGO_MS, error="550 mailbox unavailable " + "z" * 200)  # fmt: skip
    d.put("a1", origin=a, partition=2, offset=11, stage="deliver", reason="smtp_550",
          key=b"bob@example.com", value=b'{"id": "n-a1"}', dlq_partition=1)  # fmt: skip
    d.put("b0", origin=b, partition=0, offset=3, stage="route", reason="invalid_event",
          key=None, value=b'{"not json', error="not JSON: fix the producer")  # fmt: skip
    d.put("a2", origin=a, partition=0, offset=12, stage="deliver", reason="render_error",
          key=b"cy@example.com", value=b'{"id": "n-a2"}', dlq_partition=1)  # fmt: skip
    yield d
    marks = replayed_topic(topic)
    if marks in kafka_admin.list_topics(timeout=30).topics:
        for f in kafka_admin.delete_topics([marks], operation_timeout=30).values():
            f.result(timeout=30)


def _ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()]


def test_list_prints_one_line_per_dead_letter_and_filters(
    dlq: Dlq, capsys: pytest.CaptureFixture[str]
) -> None:
    d = dlq
    rc, out, err = run(capsys, "list")
    assert rc == 0, err
    # Oldest first: a0 was produced with a timestamp an hour ago.
    assert _ids(out)[0] == d.ids["a0"]
    assert sorted(_ids(out)) == sorted(d.ids.values())
    assert "4 dead letter(s)" in err
    a0 = out.splitlines()[0]
    for part in ("deliver", "smtp_550", f"{d.a}/1/10", "550 mailbox unavailable zzz"):
        assert part in a0
    assert len(a0.split(f"{d.a}/1/10  ")[1]) == 80, "the error is cut to 80 chars"

    def ids(*flags: str) -> set[str]:
        rc, out, err = run(capsys, "list", *flags)
        assert rc == 0, err
        return set(_ids(out))

    i = d.ids
    assert ids("--reason", "smtp_550") == {i["a0"], i["a1"]}
    assert ids("--reason", "smtp_550", "--reason", "render_error") == {i["a0"], i["a1"], i["a2"]}
    assert ids("--stage", "route") == {i["b0"]}
    assert ids("--topic", d.b) == {i["b0"]}
    assert ids("--topic", d.a.replace("origin-a", "origin-*")) == {i["a0"], i["a1"], i["a2"]}
    assert ids("--stage", "deliver", "--reason", "invalid_event") == set()
    half_hour_ago = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    assert ids("--since", half_hour_ago) == {i["a1"], i["b0"], i["a2"]}
    assert ids("--since", "2000-01-01") == set(i.values())
    rc, out, err = run(capsys, "list", "--limit", "2")
    assert len(out.splitlines()) == 2 and _ids(out)[0] == i["a0"] and "showing 2" in err


def test_list_of_a_missing_dlq_topic_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unique: str
) -> None:
    monkeypatch.setenv("TIDINGS_TOPICS__DLQ", f"test.nope.{unique}")
    rc, out, err = run(capsys, "list")
    assert rc == 1 and out == ""
    assert f"test.nope.{unique} does not exist" in err


def test_show_prints_headers_and_the_json_value(
    dlq: Dlq, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "show", dlq.ids["a0"])
    assert rc == 0, err
    assert f"kafka_dlt-original-topic      {dlq.a}" in out
    assert "tidings-dlq-reason            smtp_550" in out
    assert "trace                         1" in out and "trace                         2" in out
    assert "key:       ada@example.com" in out
    assert '{\n  "id": "n-a0",\n  "channel": "email"\n}' in out

    rc, out, err = run(capsys, "show", dlq.ids["b0"])
    assert rc == 0 and "not JSON" in out and '{"not json' in out

    for missing in ("0:999", "7:0"):
        rc, out, err = run(capsys, "show", missing)
        assert rc == 1 and f"no dead letter {missing}" in err
    with pytest.raises(SystemExit) as exc:
        main(["dlq", "show", "zero"])
    assert exc.value.code == 2
    assert "PARTITION:OFFSET" in capsys.readouterr().err


def _by_value(records: list[Any]) -> dict[bytes, Any]:
    return {m.value(): m for m in records}


def test_replay_puts_exactly_the_selected_records_back_once(
    dlq: Dlq, capsys: pytest.CaptureFixture[str], unique: str
) -> None:
    d, s = dlq, dlq.settings

    # --dry-run produces nothing, not even the marker topic.
    rc, out, err = run(capsys, "replay", "--reason", "smtp_550", "--dry-run")
    assert rc == 0, err
    assert sorted(line.split()[1] for line in out.splitlines()) == sorted(
        [d.ids["a0"], d.ids["a1"]]
    )
    assert all(line.startswith("would ") for line in out.splitlines())
    assert "would replay 2, skipped 0" in err
    assert read(s, d.a) == [] and read(s, d.b) == []
    admin = AdminClient(s.kafka.client_config())
    assert replayed_topic(d.topic) not in admin.list_topics(timeout=30).topics

    rc, out, err = run(capsys, "replay", "--reason", "smtp_550")
    assert rc == 0, err
    assert "replayed 2, skipped 0" in err
    got = _by_value(read(s, d.a))
    assert set(got) == {b'{"id": "n-a0", "channel": "email"}', b'{"id": "n-a1"}'}
    a0 = got[b'{"id": "n-a0", "channel": "email"}']
    assert a0.key() == b"ada@example.com"
    assert a0.partition() == 1, "back to its original partition"
    assert a0.headers() == [
        ("ce_type", b"order.created"),
        ("trace", b"1"),
        ("trace", b"2"),
        ("tidings-replay-of", f"dlq/{d.ids['a0'].replace(':', '/')}".encode()),
    ]
    a1 = got[b'{"id": "n-a1"}']
    assert (a1.key(), a1.partition()) == (b"bob@example.com", 2)
    assert a1.headers() == [("tidings-replay-of", f"dlq/{d.ids['a1'].replace(':', '/')}".encode())]
    assert read(s, d.b) == []

    # Again: nothing new.
    rc, out, err = run(capsys, "replay", "--reason", "smtp_550")
    assert rc == 0 and "replayed 0, skipped 2 already replayed" in err
    assert len(read(s, d.a)) == 2

    # By id: only that one; a null key stays null.
    rc, out, err = run(capsys, "replay", "--id", d.ids["b0"])
    assert rc == 0 and "replayed 1, skipped 0" in err, err
    [b0] = read(s, d.b)
    assert (b0.key(), b0.value()) == (None, b'{"not json')

    # A dead letter whose origin topic is gone can't go back: said, and rc 1.
    d.put("gone", origin=f"test.gone.{unique}", partition=0, offset=0, stage="route",
          reason="invalid_event", key=None, value=b"x")  # fmt: skip
    # Everything: only what was never replayed (a2) goes back.
    rc, out, err = run(capsys, "replay")
    assert rc == 1
    assert "replayed 1, skipped 3 already replayed, 1 not replayable" in err
    assert f"cannot  {d.ids['gone']}  test.gone.{unique} is gone" in out
    assert len(read(s, d.a)) == 3 and len(read(s, d.b)) == 1

    rc, out, err = run(capsys, "replay", "--dry-run", "--stage", "deliver")
    assert rc == 0 and "would replay 0, skipped 3" in err
    marks = read(s, replayed_topic(d.topic))
    assert sorted(m.key().decode() for m in marks) == sorted(
        [d.ids["a0"], d.ids["a1"], d.ids["b0"], d.ids["a2"]]
    )


def test_replay_limit_counts_only_records_replayed(
    dlq: Dlq, capsys: pytest.CaptureFixture[str]
) -> None:
    s = dlq.settings
    rc, _, err = run(capsys, "replay", "--topic", dlq.a, "--limit", "1")
    assert rc == 0 and "replayed 1, skipped 0" in err
    rc, _, err = run(capsys, "replay", "--topic", dlq.a, "--limit", "1")
    assert rc == 0 and "replayed 1, skipped 1" in err
    assert len(read(s, dlq.a)) == 2


def test_a_replay_that_crashed_before_its_commit_is_redone_once(
    dlq: Dlq, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay died mid-transaction (replayed record and marker produced, no commit).

    The next replay fences it (same transactional.id), which aborts the open
    transaction: neither its record nor its marker is ever visible, and the
    record is replayed exactly once.
    """
    s = dlq.settings
    rc, _, err = run(capsys, "replay", "--id", dlq.ids["a2"])  # creates the marker topic
    assert rc == 0, err
    zombie = Producer({**s.kafka.client_config(),
                       "transactional.id": f"tidings-dlq-replay.{dlq.topic}",
                       "transaction.timeout.ms": 60000})  # fmt: skip
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(dlq.a, value=b'{"id": "n-a0", "channel": "email"}', key=b"ada@example.com")
    zombie.produce(replayed_topic(dlq.topic), key=dlq.ids["a0"].encode(), value=b"{}")
    assert zombie.flush(30) == 0  # on the broker, uncommitted; then the process "dies"

    rc, _, err = run(capsys, "replay", "--reason", "smtp_550")
    assert rc == 0 and "replayed 2, skipped 0" in err, err
    values = sorted(m.value() for m in read(s, dlq.a))
    assert values == sorted(
        [b'{"id": "n-a0", "channel": "email"}', b'{"id": "n-a1"}', b'{"id": "n-a2"}']
    )
