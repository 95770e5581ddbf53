"""Interop with a third-party Kafka client: Debian's kcat."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

from schemas.settings import TidingsSettings

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def _kcat() -> str:
    assert KCAT, "kcat is missing: `make test` installs it (apt-get install kcat)"
    return KCAT


def test_kcat_produces_confluent_consumes(
    settings: TidingsSettings, make_topic: Callable[..., str], unique: str
) -> None:
    topic = make_topic("kcat-in", partitions=2)
    lines = "".join(f"k{i}:hello {i}\n" for i in range(20))
    subprocess.run(
        [_kcat(), "-b", settings.kafka.bootstrap_servers, "-P", "-t", topic, "-K", ":"],
        input=lines.encode(),
        check=True,
        timeout=60,
    )
    c = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"test-kcat-{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    got: dict[str, str] = {}
    for _ in range(60):
        for m in c.consume(num_messages=20, timeout=0.5):
            assert m.error() is None
            got[m.key().decode()] = m.value().decode()
        if len(got) == 20:
            break
    c.close()
    assert got == {f"k{i}": f"hello {i}" for i in range(20)}


def test_confluent_produces_kcat_consumes(
    settings: TidingsSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("kcat-out", partitions=1)
    p = Producer(settings.kafka.client_config())
    for i in range(15):
        p.produce(
            topic,
            key=f"k{i}".encode(),
            value=f"from confluent {i}".encode(),
            headers={"ce_type": b"test.event"},
        )
    assert p.flush(30) == 0
    out = subprocess.run(
        [
            _kcat(),
            "-b",
            settings.kafka.bootstrap_servers,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k|%s|%h\n",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    rows = [line.split("|") for line in out.splitlines() if line]
    assert [(k, v) for k, v, _ in rows] == [(f"k{i}", f"from confluent {i}") for i in range(15)]
    assert all(h == "ce_type=test.event" for _, _, h in rows)
