"""JSON parsing that no input can turn into a crash: bounded depth, values and strings.

`loads` never recurses deeper than `max_depth` (the depth is checked by a linear
scan *before* `json.loads`, whose C scanner recurses per nesting level and dies
with RecursionError at ~1,000), and refuses what breaks code downstream:
NaN/Infinity, numbers outside CEL's 64-bit integers or a double's range, lone
surrogates (not encodable as UTF-8), and duplicate object keys. Every refusal is
one `LimitExceeded` naming the limit; the caller adds where and how to fix it.
The size of the input is the caller's to bound before calling (it bounds the
time and memory of everything here).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_STRING_LENGTH",
    "MAX_VALUES",
    "LimitExceeded",
    "loads",
]

# Defaults, chosen for notification events (an order, a user, an alert):
# 1 MiB is Kafka's own default message.max.bytes, so a stock broker never hands over more.
MAX_BYTES = 1024 * 1024
# Real payloads nest 3-10 levels; 64 leaves headroom while rules (CEL), pydantic and
# Jinja, which all recurse, stay far from Python's recursion limit of 1,000.
MAX_DEPTH = 64
# An order with 1,000 line items of 8 fields is ~9,000 values.
MAX_VALUES = 10_000
# 64 KiB characters: larger than any field a message template should show.
MAX_STRING_LENGTH = 64 * 1024

# CEL, the rule language, has int64 and uint64 only; a larger integer fails every rule
# that reads it, so it is refused here with a clearer reason.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_INT_DIGITS = 20  # longest literal in range; checked before int() to skip huge conversions

# A JSON string (escapes included) or one bracket; only brackets outside strings count.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, valid pairs are one code point


class LimitExceeded(ValueError):
    """A refusal: `limit` names a DecodeLimits field (or a JSON rule), `value` its bound."""

    def __init__(self, limit: str, value: int | None, detail: str) -> None:
        self.limit = limit
        self.value = value
        self.detail = detail
        super().__init__(detail)


def loads(text: str, *, max_depth: int, max_values: int, max_string_length: int) -> Any:
    """Parse `text` as JSON within the limits; raises LimitExceeded or json.JSONDecodeError."""
    _check_depth(text, max_depth)
    doc = json.loads(
        text,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        parse_int=_int64,
        object_pairs_hook=_unique_keys,
    )
    _check_values(doc, max_values, max_string_length)
    return doc


def _check_depth(text: str, max_depth: int) -> None:
    # Fast path: fewer brackets in all than the limit can't nest deeper than it.
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > max_depth:
                raise LimitExceeded("max_depth", max_depth, f"nests deeper than {max_depth} levels")
        elif c in "]}":
            depth -= 1


def _check_values(doc: Any, max_values: int, max_string_length: int) -> None:
    # Iterative (an explicit stack), so it is as safe as the depth check made json.loads.
    count = 0
    stack = [doc]
    while stack:
        v = stack.pop()
        count += 1
        if count > max_values:
            raise LimitExceeded(
                "max_values", max_values, f"holds more than {max_values} values in all"
            )
        if isinstance(v, str):
            _check_string(v, max_string_length)
        elif isinstance(v, dict):
            for k in v:
                _check_string(k, max_string_length)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _check_string(s: str, max_length: int) -> None:
    if len(s) > max_length:
        raise LimitExceeded(
            "max_string_length",
            max_length,
            f"has a string of {len(s)} characters, more than {max_length}",
        )
    m = _SURROGATE.search(s)
    if m:
        raise LimitExceeded(
            "surrogates",
            None,
            f"has a lone UTF-16 surrogate \\u{ord(m.group()):04x} in a string; it can't be "
            "encoded as UTF-8 (rules, templates and providers would fail on it)",
        )


def _refuse_constant(name: str) -> Any:
    raise LimitExceeded("numbers", None, f"has {name}, which JSON does not allow; send null")


def _finite_float(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise LimitExceeded(
            "numbers", None, f"has the number {s[:40]} beyond a double's range; send a string"
        )
    return f


def _int64(s: str) -> int:
    n = int(s) if len(s.lstrip("-")) <= _INT_DIGITS else None
    if n is None or not _INT_MIN <= n <= _INT_MAX:
        raise LimitExceeded(
            "numbers",
            None,
            f"has the integer {s[:40]}{'…' if len(s) > 40 else ''} ({len(s)} characters) "
            "outside 64 bits, which rules can't read; send it as a string",
        )
    return n


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Refused rather than last-wins: parsers disagree on which duplicate wins, so a rule
    # could match on one `type` or `id` while another consumer of the topic sees the other.
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            raise LimitExceeded(
                "duplicate_keys", None, f"has the key {k[:64]!r} twice in one object"
            )
        seen.add(k)
    return dict(pairs)
