"""The directory's inline addresses: the batch row's JSON and token array, and the read-time
filter of dead tokens (streams/state/directory_rows.py); pure, no Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.recipient import Address, Recipient
from streams.state.directory_rows import _batch_rows, live_addresses, prepare

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUB = json.dumps({"endpoint": "https://push.example/abc", "keys": {"auth": "a"}})


def _parse_array(literal: str) -> list[str]:
    """A Postgres text[] literal of quoted elements, read back as Postgres does."""
    assert literal[0] == "{" and literal[-1] == "}"
    out: list[str] = []
    i, body = 0, literal[1:-1]
    while i < len(body):
        assert body[i] == '"', literal
        i, item = i + 1, []
        while body[i] != '"':
            if body[i] == "\\":
                i += 1
            item.append(body[i])
            i += 1
        out.append("".join(item))
        i += 2  # the closing quote and the comma
    return out


ADDRESSES = [
    Address(channel="push", address="tok-1", platform="fcm"),
    Address(channel="push", address='we"ird\\tok\u00e9\n', platform="apns", app_id="app.x"),
    Address(channel="webpush", address=SUB, last_seen=T0),
    Address(channel="slack", address="https://hooks.example/x"),
    Address(channel="webhook", address="https://example.com/h?a=1&b=\u00fc"),
]


def test_the_batch_row_stores_the_addresses_as_the_model_reads_them_back() -> None:
    r = Recipient(tenant="t", id="u", addresses=tuple(ADDRESSES))
    row = _batch_rows(prepare(r), 7, 0, 42)
    assert row[:3] == (7, "t", "u") and row[9:11] == (0, 42)
    doc = {"id": "u", "addresses": json.loads(row[11])}
    stored = Recipient.model_validate_json(json.dumps(doc))
    assert stored.addresses == r.addresses
    # What a push service reports dead: push tokens and the webpush endpoint, not URLs.
    assert _parse_array(row[12]) == ["tok-1", 'we"ird\\tok\u00e9\n', "https://push.example/abc"]


def test_a_recipient_without_addresses_stores_empty_ones() -> None:
    row = _batch_rows(prepare(Recipient(id="u")), 1, -1, -1)
    assert row[11:] == ("[]", "{}")


def _r(*addresses: Address) -> Recipient:
    return Recipient(tenant="t", id="u", addresses=addresses)


def test_a_dead_token_is_left_out_and_the_others_kept() -> None:
    r = _r(*ADDRESSES)
    got = live_addresses(r, [("push", "tok-1", T0)])
    assert got.addresses == tuple(ADDRESSES[1:])


def test_a_webpush_subscription_is_dead_by_its_endpoint_or_its_json() -> None:
    r = _r(ADDRESSES[2])
    late = T0 + timedelta(hours=1)
    assert live_addresses(r, [("webpush", "https://push.example/abc", late)]).addresses == ()
    assert live_addresses(r, [("webpush", SUB, late)]).addresses == ()


def test_the_channel_must_match_too() -> None:
    r = _r(ADDRESSES[0])
    assert live_addresses(r, [("webpush", "tok-1", T0)]) is r


@pytest.mark.parametrize(
    ("seen", "kept"),
    [(None, False), (T0 - timedelta(seconds=1), False), (T0, False),
     (T0 + timedelta(seconds=1), True)],
)  # fmt: skip
def test_an_address_seen_after_its_last_report_is_alive_again(
    seen: datetime | None, kept: bool
) -> None:
    a = Address(channel="push", address="tok", platform="fcm", last_seen=seen)
    reports = [("push", "tok", T0 - timedelta(days=1)), ("push", "tok", T0)]  # the latest counts
    assert live_addresses(_r(a), reports).addresses == ((a,) if kept else ())


def test_no_report_is_the_same_recipient() -> None:
    r = _r(*ADDRESSES)
    assert live_addresses(r, []) is r


def test_a_naive_last_seen_counts_as_utc() -> None:
    a = Address(channel="push", address="tok", platform="fcm", last_seen=datetime(2026, 12, 1, 13))
    assert live_addresses(_r(a), [("push", "tok", T0)]).addresses == (a,), "13:00 UTC is after"
    b = Address(channel="push", address="tok", platform="fcm", last_seen=datetime(2026, 12, 1, 11))
    assert live_addresses(_r(b), [("push", "tok", T0)]).addresses == ()
