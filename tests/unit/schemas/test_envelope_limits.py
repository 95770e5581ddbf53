"""Bounded decoding: every limit and nasty shape is refused with InvalidEventError naming
the record, the limit and its setting; nothing else escapes, nothing recurses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.bounded_json import MAX_BYTES, MAX_DEPTH, MAX_STRING_LENGTH, MAX_VALUES
from schemas.envelope import Envelope, Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.settings import DecodeLimits, load_settings

ORIGIN = Origin(topic="orders", partition=2, offset=41)
SMALL = DecodeLimits(max_bytes=4096, max_depth=4, max_values=20, max_string_length=16)


def ce(data: Any, **attrs: Any) -> bytes:
    doc = {"specversion": "1.0", "id": "e1", "type": "order.created", "source": "s", "data": data}
    return json.dumps({**doc, **attrs}).encode()


def refused(
    value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None, **kw: Any
) -> str:
    with pytest.raises(InvalidEventError) as info:
        decode_event(value, headers or [], ORIGIN, **kw)
    assert info.value.where == "orders/2/41"
    assert str(info.value).startswith("orders/2/41: ")
    return info.value.reason


def nested(open_: str, close: str, depth: int, inner: str = "1") -> bytes:
    return (open_ * depth + inner + close * depth).encode()


def test_defaults_are_the_module_constants_and_settable_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = DecodeLimits()
    assert (d.max_bytes, d.max_depth, d.max_values, d.max_string_length) == (
        MAX_BYTES, MAX_DEPTH, MAX_VALUES, MAX_STRING_LENGTH,
    )  # fmt: skip
    monkeypatch.setenv("TIDINGS_ROUTE__LIMITS__MAX_DEPTH", "9")
    assert load_settings().route.limits.max_depth == 9
    with pytest.raises(ValueError, match="max_dept"):
        DecodeLimits(max_dept=3)  # type: ignore[call-arg]  # a typo is an error


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (nested("[", "]", 5), "max_depth"),
        (nested('{"a":', "}", 5), "max_depth"),
        (ce(list(range(25))), "max_values"),
        (ce({f"k{i}": i for i in range(25)}), "max_values"),
        (ce("x" * 17), "max_string_length"),
        (ce({"k" * 17: 1}), "max_string_length"),  # keys count too
        (ce("x" * 5000), "max_bytes"),
    ],
)
def test_each_limit_names_itself_its_value_and_its_setting(value: bytes, limit: str) -> None:
    reason = refused(value, limits=SMALL)
    bound = getattr(SMALL, limit)
    assert f"route.limits.{limit} = {bound}" in reason
    assert f"TIDINGS_ROUTE__LIMITS__{limit.upper()}" in reason


def test_at_the_limit_is_accepted() -> None:
    # depth 4: the root object, data's list and two more lists; 16-character strings.
    env = decode_event(ce([[["x" * 16]]]), [], ORIGIN, limits=SMALL)
    assert env.data == [[["x" * 16]]]


def test_headers_count_toward_the_size() -> None:
    headers: list[tuple[str, bytes | None]] = [("h", b"x" * 4094)]
    assert "max_bytes" in refused(b"{}", headers, limits=SMALL)


@pytest.mark.parametrize("shape", [("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")])
def test_20000_levels_are_refused_without_recursion(shape: tuple[str, str]) -> None:
    reason = refused(nested(*shape, 20_000))
    assert "nests deeper than 64 levels" in reason


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = "[" * 200 + '\\"{' * 50  # escaped quotes must not end the string early
    env = decode_event(ce({"note": text}), [], ORIGIN)
    assert env.data == {"note": text}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1e999}', "beyond a double's range"),
        (b'{"a": ' + b"9" * 5000 + b"}", "outside 64 bits"),
        (b'{"a": 18446744073709551616}', "outside 64 bits"),  # 2**64
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate \\ud800"),
        (b'{"a": "x\\udfff"}', "lone UTF-16 surrogate \\udfff"),
        (b'{"a": 1, "a": 2}', "key 'a' twice"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": ', "not valid JSON"),
        (ce(1, datacontenttype=5), "'datacontenttype'"),
    ],
)
def test_nasty_shapes_are_refused_with_a_reason(raw: bytes, words: str) -> None:
    assert words in refused(raw)


def test_what_is_fine_stays_fine() -> None:
    big = {"a": 2**64 - 1, "b": -(2**63), "c": 1.5e300, "d": "\U0001f600", "e": "\\ud800"}
    env = decode_event(json.dumps(big).encode(), [], ORIGIN)  # a surrogate *pair* is fine
    assert env.data == big
    assert decode_event(b'{"s": "\\ud83d\\ude00"}', [], ORIGIN).data == {"s": "\U0001f600"}


def test_a_utf8_bom_is_tolerated() -> None:
    assert decode_event(b"\xef\xbb\xbf" + ce(1), [], ORIGIN).data == 1


def test_a_tombstone_is_refused_as_such() -> None:
    assert "tombstone" in refused(None)


def test_binary_mode_bodies_and_ce_headers_are_bounded() -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_type", b"t"), ("ce_source", b"s"),
    ]  # fmt: skip
    reason = refused(nested("[", "]", 5), headers, limits=SMALL)
    assert "binary-mode body nests deeper" in reason
    long = [*headers, ("ce_subject", b"s" * 17)]
    reason = refused(b"{}", long, limits=SMALL)
    assert "header ce_subject is 17 characters" in reason
    assert "max_string_length" in reason
    env: Envelope = decode_event(b"\x00\xff", [*headers, ("content-type", b"image/png")], ORIGIN)
    assert env.data == b"\x00\xff", "a non-JSON body is data as it is"


def test_a_huge_record_is_refused_before_parsing() -> None:
    # 10 MB of '[': the size check answers at once, without scanning.
    assert "max_bytes" in refused(b"[" * 10_000_000)
