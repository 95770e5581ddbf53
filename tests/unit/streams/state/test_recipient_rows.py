"""Import rows (CSV, JSON Lines) and recipients-topic records, parsed without any service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.recipient import MAX_ADDRESSES, RecipientChange, recipient_key
from streams.stages.recipients import decode_change
from streams.state.directory_rows import change_target, prepare
from streams.state.recipient_rows import (
    count_lines,
    delete_change,
    parse_csv_row,
    parse_json_line,
    prepare_csv_row,
    read_recipients,
    upsert_change,
)

HEADER = "tenant,id,email,phone,locale,timezone,attributes,push_tokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_a_csv_row_becomes_a_recipient_with_its_push_tokens() -> None:
    r = parse_csv_row({
        "tenant": "acme", "id": "u-1", "email": "ada@example.com", "phone": "+14155550123",
        "locale": "fr-FR", "timezone": "Europe/Paris", "attributes": '{"plan": "pro"}',
        "push_tokens": "fcm:tok-a|apns:tok-b",
    })  # fmt: skip
    assert (r.tenant, r.id, r.email, r.locale) == ("acme", "u-1", "ada@example.com", "fr-FR")
    assert r.attributes == {"plan": "pro"}
    assert [(a.platform, a.address) for a in r.addresses] == [("fcm", "tok-a"), ("apns", "tok-b")]
    assert r.addresses_on("push") == ["tok-a", "tok-b"]


def test_empty_cells_are_absent_values() -> None:
    r = parse_csv_row({"tenant": "", "id": "u-2", "email": "", "phone": "", "attributes": ""})
    assert (r.tenant, r.email, r.phone, r.attributes, r.addresses) == ("", None, None, {}, ())


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"id": "u", "email": "not-an-email"}, "email: not an email address"),
        ({"id": "u", "phone": "0612345678"}, "phone: not an E.164 number"),
        ({"id": "u", "attributes": "{bad"}, "attributes: not valid JSON"),
        ({"id": "u", "attributes": "[1]"}, "attributes: must be an object"),
        ({"id": "u", "push_tokens": "gcm:abc"}, "push_tokens: 'gcm:abc' is not PLATFORM:TOKEN"),
        ({"id": "x" * 300}, "id: String should have at most 256 characters"),
        ({"id": ""}, "id: Field required"),
        ({"id": "u", "preferences": '{"channels": ["fax"]}'}, "unknown channel(s) ['fax']: use"),
        ({"id": "u", "preferences": '{"colour": "red"}'}, "preferences.colour: Extra inputs"),
    ],
)
def test_a_bad_row_says_what_is_wrong(row: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_csv_row(row)
    assert says in str(err.value)


def test_too_many_addresses_are_refused_by_the_bound() -> None:
    tokens = "|".join(f"fcm:t{i}" for i in range(MAX_ADDRESSES + 1))
    with pytest.raises(ValueError, match=f"addresses: .*at most {MAX_ADDRESSES}"):
        parse_csv_row({"id": "u", "push_tokens": tokens})


def test_a_csv_file_yields_each_row_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "r.csv", HEADER
              + 'acme,u-1,a@example.com,,,,"{""plan"": ""pro""}",fcm:t1\n'
              + "\n"
              + 'acme,u-2,"multi\nline@example",,,,,\n'
              + "acme,u-3,c@example.com,+33612345678,fr,Europe/Paris,,\n"
              + "acme,u-4\n")  # fmt: skip
    got = list(read_recipients(p))
    assert [line for line, _ in got] == [2, 4, 6, 7]
    assert not isinstance(got[0][1], str) and got[0][1].attributes == {"plan": "pro"}
    assert got[1][1] == "email: not an email address (name@domain.tld)"
    assert not isinstance(got[2][1], str) and got[2][1].phone == "+33612345678"
    assert got[3][1] == "2 fields, but the header names 8"


def test_a_csv_header_with_an_unknown_column_is_refused_at_line_1(tmp_path: Path) -> None:
    p = write(tmp_path, "r.csv", "id,mail\nu-1,a@example.com\n")
    with pytest.raises(ValueError, match=r"r\.csv:1: .*unknown: mail"):
        list(read_recipients(p))


def test_a_jsonl_file_yields_each_line(tmp_path: Path) -> None:
    ok = {
        "tenant": "acme",
        "id": "u-1",
        "email": "a@example.com",
        "addresses": [{"channel": "webpush", "address": '{"endpoint": "https://p/x"}'}],
    }
    p = write(tmp_path, "r.jsonl", json.dumps(ok) + "\n\n{not json\n"
              + json.dumps({"id": "u-2", "addresses": [{"channel": "fax", "address": "1"}]})
              + "\n")  # fmt: skip
    got = list(read_recipients(p))
    assert [line for line, _ in got] == [1, 3, 4]
    assert not isinstance(got[0][1], str) and got[0][1].addresses_on("webpush")
    assert "Invalid JSON" in str(got[1][1])
    assert "addresses.0.channel: Input should be 'push'" in str(got[2][1])


def test_another_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"use \.csv or \.jsonl"):
        read_recipients(write(tmp_path, "r.xlsx", ""))


def test_count_lines_counts_a_last_line_without_newline(tmp_path: Path) -> None:
    assert count_lines(write(tmp_path, "a.csv", "a\nb\nc")) == 3
    assert count_lines(write(tmp_path, "b.csv", "a\nb\n")) == 2
    assert count_lines(write(tmp_path, "c.csv", "")) == 0


def test_parse_json_line_applies_the_email_rule() -> None:
    with pytest.raises(ValueError, match="email"):
        parse_json_line('{"id": "u", "email": "nope"}')


# ------------------------------------------------------------ the topic's records


def test_an_upsert_round_trips_through_decode_change() -> None:
    r = parse_json_line('{"tenant": "acme", "id": "u-1", "locale": "de"}')
    value = upsert_change(r).model_dump_json().encode()
    change = decode_change(r.key(), value)
    assert change is not None and change.recipient() == r


def test_a_key_that_names_another_recipient_is_refused() -> None:
    r = parse_json_line('{"tenant": "acme", "id": "u-1"}')
    value = upsert_change(r).model_dump_json().encode()
    with pytest.raises(ValueError, match="doesn't match its data"):
        decode_change(b"acme/u-2", value)
    with pytest.raises(ValueError, match="has no key"):
        decode_change(None, value)


def test_a_delete_and_a_tombstone_name_their_target() -> None:
    value = delete_change("acme", "u-1").model_dump_json().encode()
    change = decode_change(b"acme/u-1", value)
    assert change is not None and change_target(change, b"acme/u-1") == ("acme", "u-1")
    assert decode_change(b"acme/u-1", None) is None
    assert change_target(None, b"/u-9") == ("", "u-9")
    with pytest.raises(ValueError, match="not <tenant>/<id>"):
        decode_change(b"no-slash", None)


@pytest.mark.parametrize(
    "value",
    [
        b"{not json",
        b'{"specversion": "1.0", "id": "e", "source": "s", "type": "tidings.recipient.merged",'
        b' "data": {"id": "u-1"}}',
        b'{"specversion": "1.0", "id": "e", "source": "s", "type": "tidings.recipient.upserted",'
        b' "data": {"id": "u-1", "addresses": [{"channel": "fax", "address": "1"}]}}',
    ],
)
def test_malformed_records_raise_value_errors(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_change(recipient_key("", "u-1"), value)


def test_a_batch_row_keeps_an_address_listed_twice_once_and_finds_the_endpoint() -> None:
    sub = json.dumps({"endpoint": "https://push.example/abc", "keys": {}})
    r = parse_json_line(json.dumps({"id": "u", "addresses": [
        {"channel": "push", "address": "t1", "platform": "fcm"},
        {"channel": "push", "address": "t1", "platform": "fcm"},
        {"channel": "webpush", "address": sub},
    ]}))  # fmt: skip
    fields, addresses = prepare(r)
    assert [(a[0], a[1], a[5]) for a in addresses] == [
        ("push", "t1", None), ("webpush", sub, "https://push.example/abc"),
    ]  # fmt: skip
    assert fields[6:] == ("{}", "{}")


def test_a_change_carries_the_whole_recipient() -> None:
    r = parse_json_line('{"tenant": "t", "id": "u", "preferences": {"categories": ["news"]}}')
    change = RecipientChange.model_validate_json(upsert_change(r).model_dump_json())
    assert change.recipient().preferences.categories == ("news",)


# ------------------------------------------------------------ the import's fast path

EDGES: list[dict[str, str]] = [
    {"id": "u", "tenant": "t" * 256, "email": "a@b.co", "phone": "+1234567"},
    {"id": "u", "tenant": "t" * 257},
    {"id": "i" * 256},
    {"id": "i" * 257},
    {"id": ""},
    {"id": "u", "email": ("e" * 310) + "@example.com"},
    {"id": "u", "email": ("e" * 309) + "@example.com"},
    {"id": "u", "email": "a@b"},
    {"id": "u", "phone": "+" + "1" * 15},
    {"id": "u", "phone": "+" + "1" * 16},
    {"id": "u", "locale": "l" * 35, "timezone": "z" * 64},
    {"id": "u", "locale": "l" * 36},
    {"id": "u", "timezone": "z" * 65},
    {"id": "u", "attributes": '{"k": "' + "v" * (16 * 1024 - 8) + '"}'},
    {"id": "u", "attributes": '{"k": "' + "v" * (16 * 1024 - 7) + '"}'},
    {"id": "u", "attributes": '{"k": "\u00e9", "n": 1e5, "l": [1, {"x": null}]}'},
    {"id": "u", "attributes": "[]"},
    {"id": "u", "attributes": "{}"},
    {"id": "u", "attributes": "nope"},
    {"id": "u", "push_tokens": "fcm:a|fcm:a| apns:b "},
    {"id": "u", "push_tokens": "fcm:" + "x" * 4096},
    {"id": "u", "push_tokens": "fcm:" + "x" * 4097},
    {"id": "u", "push_tokens": "|".join(f"fcm:t{i}" for i in range(100))},
    {"id": "u", "push_tokens": "|".join(f"fcm:t{i}" for i in range(101))},
    {"id": "u", "push_tokens": "fcm:"},
    {"id": "u", "preferences": '{"categories": ["marketing"], "channels": ["sms"]}'},
    {"id": "u", "preferences": "{}"},
    {"id": "u", "preferences": '{"channels": ["fax"]}'},
    {"id": "u", "preferences": '{"categories": ["a"], "opt_in": {"categories": ["a"]}}'},
    {"id": "u", "preferences": "[1]"},
    {"id": "u", "addresses": '[{"channel": "slack", "address": "https://h/x"}]'},
]


@pytest.mark.parametrize("row", EDGES, ids=range(len(EDGES)))
def test_the_fast_path_accepts_and_stores_exactly_what_the_models_do(row: dict[str, str]) -> None:
    try:
        slow: object = prepare(parse_csv_row(row))
    except ValueError as exc:
        slow = ("refused", str(exc))
    try:
        fast: object = prepare_csv_row(row)
    except ValueError as exc:
        fast = ("refused", str(exc))
    assert fast == slow
