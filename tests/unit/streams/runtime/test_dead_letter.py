"""refused_output: the dead letter that stands in for an output the broker refused."""

from __future__ import annotations

from streams.dlq.select import DeadLetter
from streams.runtime.dead_letter import (
    DLQ_MAX_MESSAGE_BYTES,
    OUTPUT_REFUSED,
    header_map,
    refused_output,
)
from streams.runtime.records import Out


def test_it_keeps_the_output_and_names_its_topic_as_the_origin() -> None:
    out = Out("notification.dispatch.email", b"payload", b"key", [("traceparent", b"00-1")])
    dead = refused_output("tidings.dlq", out, "Broker: Message size too large", "route")
    meta = header_map(dead.headers)
    assert (dead.topic, dead.key, dead.value) == ("tidings.dlq", b"key", b"payload")
    assert ("traceparent", b"00-1") in dead.headers
    assert meta["tidings-dlq-reason"] == OUTPUT_REFUSED
    assert meta["tidings-dlq-stage"] == "route"
    assert meta["kafka_dlt-original-topic"] == "notification.dispatch.email"
    assert meta["kafka_dlt-exception-message"] == "Broker: Message size too large"
    # Replay lets the partitioner choose: no origin partition to go back to.
    dl = DeadLetter(0, 0, 0, dead.key, dead.value, list(dead.headers))
    assert dl.origin_topic == "notification.dispatch.email"
    assert dl.origin_partition == -1


def test_a_value_too_large_even_for_the_dlq_is_dropped_and_the_message_says_so() -> None:
    out = Out("t", b"x" * DLQ_MAX_MESSAGE_BYTES, b"key")
    dead = refused_output("tidings.dlq", out, "too large", "deliver")
    assert dead.value is None and dead.key == b"key"
    message = header_map(dead.headers)["kafka_dlt-exception-message"]
    assert f"({DLQ_MAX_MESSAGE_BYTES} bytes)" in message and "not kept" in message
