"""The pure half of `tidings dlq`: ids, filters, header handling and output lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.dlq.select import (
    REPLAY_HEADER,
    DeadLetter,
    Selection,
    format_line,
    format_show,
    parse_id,
    parse_since,
    replay_headers,
    replay_marker,
)
from streams.runtime.dead_letter import dead_letter

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _dl(
    *,
    partition: int = 0,
    offset: int = 7,
    at: datetime = T0,
    topic: str = "notification.dispatch.email",
    stage: str = "deliver",
    reason: str = "smtp_550",
    error: BaseException | None = None,
    value: bytes = b'{"id": "n1", "channel": "email"}',
    headers: list[tuple[str, bytes | None]] | None = None,
) -> DeadLetter:
    out = dead_letter(
        "notification.dlq", topic=topic, partition=2, offset=41, timestamp_ms=1_000,
        key=b"ada@example.com", value=value, headers=headers, stage=stage, reason=reason,
        error=error or RuntimeError("550 mailbox unavailable"),
    )  # fmt: skip
    hdrs: list[tuple[str, bytes | None]] = list(out.headers)
    return DeadLetter(partition, offset, int(at.timestamp() * 1000), out.key, out.value, hdrs)


# ---------------------------------------------------------------- ids and times


@pytest.mark.parametrize(
    ("text", "want"), [("0:42", (0, 42)), (" 3:0 ", (3, 0)), ("12:9", (12, 9))]
)
def test_parse_id_reads_partition_colon_offset(text: str, want: tuple[int, int]) -> None:
    assert parse_id(text) == want


@pytest.mark.parametrize("text", ["", "42", "0:", ":1", "a:1", "0:-1", "0:1:2", "0/1"])
def test_parse_id_refuses_anything_else_and_says_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        parse_id(text)


def test_parse_since_accepts_dates_z_and_offsets_and_defaults_to_utc() -> None:
    assert parse_since("2026-05-01") == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_since("2026-05-01T12:00:00Z") == T0
    assert parse_since("2026-05-01T14:00:00+02:00") == T0
    assert parse_since("2026-05-01T12:00:00") == T0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("yesterday")


# ---------------------------------------------------------------- parsed headers


def test_dead_letter_exposes_origin_stage_reason_and_error() -> None:
    dl = _dl()
    assert dl.id == "0:7"
    assert dl.origin_topic == "notification.dispatch.email"
    assert (dl.origin_partition, dl.origin_offset) == (2, 41)
    assert (dl.stage, dl.reason) == ("deliver", "smtp_550")
    assert dl.error == "550 mailbox unavailable"
    assert dl.time == T0


def test_a_record_without_dlq_headers_has_no_origin() -> None:
    dl = DeadLetter(0, 1, 0, None, b"x", [("kafka_dlt-original-partition", b"nope")])
    assert dl.origin_topic is None
    assert dl.origin_partition is None and dl.origin_offset is None
    assert dl.stage == dl.reason == dl.error == ""


# ---------------------------------------------------------------- selection


def test_an_empty_selection_takes_everything() -> None:
    assert Selection().matches(_dl())


def test_every_criterion_must_hold_and_any_value_of_one_may_match() -> None:
    dl = _dl()
    assert Selection(reasons=("smtp_550", "render_error")).matches(dl)
    assert not Selection(reasons=("render_error",)).matches(dl)
    assert Selection(stages=("route", "deliver")).matches(dl)
    assert not Selection(stages=("route",)).matches(dl)
    assert not Selection(reasons=("smtp_550",), stages=("route",)).matches(dl)


def test_topic_matches_the_origin_topic_exactly_or_by_glob() -> None:
    dl = _dl(topic="test.abc.dispatch.email")
    assert Selection(topics=("test.abc.dispatch.email",)).matches(dl)
    assert Selection(topics=("test.*.dispatch.email",)).matches(dl)
    assert not Selection(topics=("test.abc.dispatch",)).matches(dl)
    assert not Selection(topics=("test.abc.dispatch.email.x",)).matches(dl)
    no_origin = DeadLetter(0, 1, 0, None, b"x", [])
    assert not Selection(topics=("*",)).matches(no_origin)


def test_since_is_inclusive_and_compares_instants() -> None:
    dl = _dl(at=T0)
    assert Selection(since=T0).matches(dl)
    assert Selection(since=T0 - timedelta(seconds=1)).matches(dl)
    assert not Selection(since=T0 + timedelta(milliseconds=1)).matches(dl)
    plus2 = timezone(timedelta(hours=2))
    assert Selection(since=datetime(2026, 5, 1, 14, 0, tzinfo=plus2)).matches(dl)


def test_ids_select_by_dlq_partition_and_offset() -> None:
    dl = _dl(partition=1, offset=5)
    assert Selection(ids=frozenset({(1, 5), (0, 0)})).matches(dl)
    assert not Selection(ids=frozenset({(0, 5)})).matches(dl)
    assert not Selection(ids=frozenset({(1, 5)}), reasons=("other",)).matches(dl)


# ---------------------------------------------------------------- replay


def test_replay_headers_keep_the_originals_in_order_and_name_the_dlq_record() -> None:
    original: list[tuple[str, bytes | None]] = [
        ("ce_type", b"order.created"),
        ("x-trace", b"a"),
        ("x-trace", b"b"),
    ]
    dl = _dl(headers=original, partition=0, offset=9)
    got = replay_headers(dl.headers, dl.partition, dl.offset)
    assert got == [*original, (REPLAY_HEADER, b"dlq/0/9")]


def test_replay_headers_replace_an_earlier_replay_header() -> None:
    # Replayed once, failed again, dead-lettered again: the new replay names the new record.
    dl = _dl(headers=[(REPLAY_HEADER, b"dlq/0/3"), ("k", b"v")], partition=0, offset=11)
    got = replay_headers(dl.headers, dl.partition, dl.offset)
    assert got == [("k", b"v"), (REPLAY_HEADER, b"dlq/0/11")]
    assert not any(k.startswith(("kafka_dlt-", "tidings-dlq-")) for k, _ in got)


def test_replay_marker_is_keyed_by_the_dlq_id_and_says_what_it_was() -> None:
    key, value = replay_marker(_dl(partition=1, offset=5), T0)
    assert key == b"1:5"
    doc = json.loads(value)
    assert doc["origin_topic"] == "notification.dispatch.email"
    assert (doc["origin_partition"], doc["origin_offset"]) == (2, 41)
    assert doc["reason"] == "smtp_550"
    assert doc["replayed_at"] == "2026-05-01T12:00:00Z"


# ---------------------------------------------------------------- output


def test_list_line_has_id_time_stage_reason_origin_and_80_chars_of_the_error() -> None:
    err = RuntimeError("550 mailbox unavailable\n" + "x" * 200)
    line = format_line(_dl(error=err))
    assert line.startswith("0:7 ")
    for part in (
        "2026-05-01T12:00:00.000Z",
        "deliver",
        "smtp_550",
        "notification.dispatch.email/2/41",
    ):
        assert part in line
    assert "\n" not in line
    shown = line.split("notification.dispatch.email/2/41  ")[1]
    assert (
        len(shown) == 80 and shown.startswith("550 mailbox unavailable x") and shown.endswith("…")
    )


def test_show_prints_headers_and_pretty_json() -> None:
    text = format_show(_dl(), "notification.dlq")
    assert "notification.dlq partition 0 offset 7" in text
    assert "key:       ada@example.com" in text
    assert "kafka_dlt-original-topic" in text and "tidings-dlq-reason" in text
    assert '  "id": "n1",\n  "channel": "email"' in text


def test_show_prints_non_json_values_as_text() -> None:
    text = format_show(_dl(value=b'{"not json \xff'), "notification.dlq")
    assert "not JSON" in text
    assert '{"not json \\xff' in text
