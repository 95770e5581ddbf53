"""`tidings catalog publish` to a compacted topic; workers follow it and refuse bad bundles."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from catalog import CatalogError
from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.state.catalog import CatalogRef

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog"


@pytest.fixture
def catalog_topic(kafka_admin: AdminClient, unique: str) -> Iterator[str]:
    name = f"test.catalog.{unique}"
    yield name
    for f in kafka_admin.delete_topics([name], operation_timeout=30).values():
        with contextlib.suppress(Exception):  # never created when the test failed early
            f.result(timeout=30)


def wait(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_publish_follow_and_refuse(
    settings: TidingsSettings, catalog_topic: str, tmp_path: Path, kafka_admin: AdminClient
) -> None:
    with pytest.raises(CatalogError, match="no good catalog"):
        CatalogRef.from_topic(settings, catalog_topic, timeout_s=5)
    assert main(["catalog", "publish", str(EXAMPLE), "--topic", catalog_topic]) == 0
    cfg = kafka_admin.describe_configs([ConfigResource("topic", catalog_topic)])
    [fut] = cfg.values()
    assert fut.result(timeout=30)["cleanup.policy"].value == "compact"

    ref = CatalogRef.from_topic(settings, catalog_topic)
    first = ref.current.version
    ref.follow(settings, catalog_topic)
    try:
        changed = tmp_path / "cat"
        shutil.copytree(EXAMPLE, changed)
        (changed / "templates/welcome/email/subject.txt.j2").write_text("Hi {{ name }}\n")
        assert main(["catalog", "publish", str(changed), "--topic", catalog_topic]) == 0
        wait(lambda: ref.current.version != first)
        second = ref.current.version

        # A bad catalog is refused by publish, and a bad record by the follower.
        (changed / "rules.yaml").write_text("rules: [\n")
        assert main(["catalog", "publish", str(changed), "--topic", catalog_topic]) == 1
        producer = Producer(settings.kafka.client_config())
        producer.produce(catalog_topic, b"garbage", b"default")
        assert producer.flush(30) == 0
        wait(lambda: ref.last_error is not None)
        assert ref.current.version == second
    finally:
        ref.stop()
    # A fresh worker skips the garbage record and starts on the newest good catalog.
    assert CatalogRef.from_topic(settings, catalog_topic).current.version == second
