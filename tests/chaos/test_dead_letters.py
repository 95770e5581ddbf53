"""The chaos harness's DLQ reader keeps reading whatever the dead letter holds."""

from __future__ import annotations

from tests.chaos.world import _origin

_HEADERS = [
    ("kafka_dlt-original-topic", b"chaos.x.events"),
    ("kafka_dlt-original-partition", b"1"),
    ("kafka_dlt-original-offset", b"19"),
    ("tidings-dlq-reason", b"invalid_event"),
]


class _Msg:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return _HEADERS


def test_an_event_dead_letter_names_its_origin_reason_and_event_id() -> None:
    assert _origin(_Msg(b'{"id": "e-1", "type": "order.created"}')) == (
        "chaos.x.events/1/19", "invalid_event", "e-1",
    )  # fmt: skip


def test_poison_values_give_no_event_id_and_never_raise() -> None:
    # A raise here would end the reader thread, and every later dead letter would go unseen.
    for poison in (b"[" * 20_000 + b"]" * 20_000, None, b"\xff\xfe", b"[1, 2]", b'{"no": 1}'):
        assert _origin(_Msg(poison)) == ("chaos.x.events/1/19", "invalid_event", "")
