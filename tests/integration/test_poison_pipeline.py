"""Poison records against the real stack: a 20,000-deep CloudEvent, a tombstone and a
~900 KB event go to the DLQ byte for byte, and the 50 good events behind them are mailed
exactly once each."""

from __future__ import annotations

import json
from collections.abc import Callable

from confluent_kafka import Producer

from tests.integration.pipeline import World

_BIG_LIMIT = 512 * 1024  # route.limits.max_bytes for this world, so ~900 KB is over it
Headers = list[tuple[str, bytes | None]]


def _poison(w: World) -> list[tuple[bytes, bytes | None, Headers, str]]:
    """(key, value, headers, words the DLQ message must hold)."""
    deep = json.dumps(w.order_event(9_000)).encode()
    deep = deep.replace(b'"currency": "EUR"', b'"deep": ' + b"[" * 20_000 + b"]" * 20_000)
    assert deep.count(b"[") > 20_000
    big = json.dumps({**w.order_event(9_001), "note": "x" * 900_000}).encode()
    odd: Headers = [("none", None), ("bin", b"\xff\x00\xfe")]
    return [
        (b"deep", deep, [], "nests deeper than 64 levels"),
        (b"tomb", None, odd, "tombstone"),
        (b"big", big, odd, "TIDINGS_ROUTE__LIMITS__MAX_BYTES"),
    ]


def test_poison_is_dead_lettered_byte_for_byte_and_good_events_go_on(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with(extra=lambda _port: {"route": {"limits": {"max_bytes": _BIG_LIMIT}}})
    assert w.settings.route.limits.max_bytes == _BIG_LIMIT
    poison = _poison(w)
    p: Producer = w.producer()
    for key, value, headers, _ in poison:  # first on every partition: the good ones queue behind
        for part in range(w.settings.topics.partitions):
            p.produce(w.order_topic, key=key, value=value, headers=headers, partition=part)
    assert p.flush(30) == 0
    expected = w.send([(w.order_event(i), "structured") for i in range(50)])

    with w.pipeline():
        got = w.wait_mail(50)
    assert set(got) == set(expected), "every good event was mailed"
    assert all(n == 1 for n in got.values()), "exactly once"

    dlq = w.read(w.settings.topics.dlq)
    parts = w.settings.topics.partitions
    assert len(dlq) == len(poison) * parts, [m.key() for m in dlq]
    by_key = {key: (value, headers, words) for key, value, headers, words in poison}
    for m in dlq:
        value, headers, words = by_key[m.key()]
        assert m.value() == value, f"{m.key()!r}: the DLQ keeps the value byte for byte"
        if value is None:
            assert m.value() is None, "a tombstone stays a tombstone"
        h = dict(m.headers())
        assert h["tidings-dlq-reason"] == b"invalid_event"
        assert h["kafka_dlt-exception-fqcn"] == b"schemas.exceptions.InvalidEventError"
        assert words in h["kafka_dlt-exception-message"].decode()
        assert h["kafka_dlt-original-topic"].decode() == w.order_topic
        kept = [kv for kv in m.headers() if not kv[0].startswith(("kafka_dlt-", "tidings-dlq-"))]
        assert kept == headers, "None and binary header values survive"
