"""A DLQ topic made before tidings sized it (broker default 1 MiB) is raised to
DLQ_MAX_MESSAGE_BYTES by `ensure_topics`, and `tidings doctor` reports it while it is low."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import TidingsSettings
from streams.cli.doctor import run_checks
from streams.runtime.dead_letter import DLQ_MAX_MESSAGE_BYTES
from streams.runtime.kafka import dlq_max_message_bytes, ensure_topics, raise_dlq_max_message_bytes

pytestmark = pytest.mark.integration

_ONE_MIB = 1024 * 1024


def _with_dlq(settings: TidingsSettings, topic: str) -> TidingsSettings:
    return settings.model_copy(update={"topics": settings.topics.model_copy(update={"dlq": topic})})


@pytest.fixture
def small_dlq(kafka_admin: AdminClient, unique: str) -> Iterator[str]:
    """A uuid-named DLQ topic created the old way, max.message.bytes 1 MiB (deleted after)."""
    name = f"test.dlq.{unique}"
    topic = NewTopic(name, 1, 1, config={"max.message.bytes": str(_ONE_MIB)})
    kafka_admin.create_topics([topic], operation_timeout=30)[name].result(timeout=30)
    yield name
    for f in kafka_admin.delete_topics([name], operation_timeout=30).values():
        f.result(timeout=30)


def test_ensure_topics_raises_a_small_existing_dlq(
    settings: TidingsSettings,
    kafka_admin: AdminClient,
    small_dlq: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = _with_dlq(settings, small_dlq)
    assert dlq_max_message_bytes(kafka_admin, small_dlq, 10) == _ONE_MIB
    (before,) = run_checks(s, ["kafka"])
    assert (
        before.ok and f"WARNING: DLQ {small_dlq} has max.message.bytes {_ONE_MIB}" in before.detail
    )

    with caplog.at_level(logging.INFO, logger="streams.runtime.kafka"):
        assert ensure_topics(s, {small_dlq: 1}) == []  # exists: nothing created
    assert dlq_max_message_bytes(kafka_admin, small_dlq, 10) == DLQ_MAX_MESSAGE_BYTES
    raised = [r for r in caplog.records if "raised max.message.bytes" in r.getMessage()]
    assert len(raised) == 1 and raised[0].levelno == logging.INFO
    assert small_dlq in raised[0].getMessage()

    (after,) = run_checks(s, ["kafka"])
    assert after.ok and "DLQ" not in after.detail
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streams.runtime.kafka"):
        ensure_topics(s, {small_dlq: 1})  # already large enough: silent
    assert not caplog.records


def test_a_refused_raise_warns_with_the_command_and_does_not_fail(
    settings: TidingsSettings, kafka_admin: AdminClient, unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # The local broker has no authorizer to refuse the alter; a DLQ topic it doesn't know
    # makes it refuse the same way (an error for the resource), so the warning path runs.
    missing = f"test.dlq.missing.{unique}"
    with caplog.at_level(logging.WARNING, logger="streams.runtime.kafka"):
        assert raise_dlq_max_message_bytes(kafka_admin, _with_dlq(settings, missing), 10) is False
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert f"DLQ topic {missing}" in text
    assert (
        f"kafka-configs.sh --bootstrap-server {settings.kafka.bootstrap_servers} --alter "
        f"--entity-type topics --entity-name {missing} "
        f"--add-config max.message.bytes={DLQ_MAX_MESSAGE_BYTES}"
    ) in text
