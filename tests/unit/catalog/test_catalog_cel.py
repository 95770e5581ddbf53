"""The CEL adapter: type checks at compile time, errors as exceptions, plain Python results."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from catalog import cel

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
EVENT = {"id": "1", "type": "t", "data": {"n": 2, "s": "x", "l": [1, "a", None], "m": {"k": 1.5}}}


def run(source: str, event: dict[str, Any] | None = None) -> Any:
    return cel.compile_expression(source).evaluate(cel.bind(event or EVENT, NOW))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.n", 2),
        ("event.data.s + 'y'", "xy"),
        ("event.data.l", [1, "a", None]),
        ("event.data.m", {"k": 1.5}),
        ("event.data.n > 1", True),
        ("1u", 1),
        ("null", None),
        ("now", "2025-01-02T03:04:05Z"),
        ("duration('90s')", 90.0),
        ("now - timestamp('2025-01-02T03:04:00Z')", 5.0),
        ("[now]", ["2025-01-02T03:04:05Z"]),
        ("type(1)", "INT"),
        ("event.data.s.upperAscii()", "X"),  # strings extension
        ("math.greatest(1, 5, 3)", 5),  # math extension
        ("event.data.?missing.orValue('d')", "d"),  # optional extension
        ("{1: 'a'}", {1: "a"}),
    ],
)
def test_results_are_plain_python(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        ("event.data.missing", "Key not found"),
        ("1 / 0", "divide by zero"),
        ("event.data.s > 1", "No matching overloads"),
        ("b'ab'", "bytes"),
    ],
)
def test_runtime_failures_raise(source: str, cause: str) -> None:
    with pytest.raises(cel.CelEvalError, match=cause):
        run(source)


@pytest.mark.parametrize(
    ("source", "expected", "ok"),
    [
        ("event.data.n > 1", "bool", True),
        ("event.data.flag", "bool", True),  # dyn: checked again at runtime
        ("'yes'", "bool", False),
        ("1", "bool", False),
        ("event.data.email", "recipients", True),
        ("['a', 'b']", "recipients", True),
        ("[event.data.a, 'b']", "recipients", True),
        ("[1, 2]", "recipients", False),
        ("{'a': 1}", "recipients", False),
        ("{'a': 1}", "any", True),
        ("{b'k': 1}", "any", False),
    ],
)
def test_result_types_checked_at_compile_time(source: str, expected: Any, ok: bool) -> None:
    if ok:
        cel.compile_expression(source, expected)
    else:
        with pytest.raises(cel.CelCompileError):
            cel.compile_expression(source, expected)


def test_compile_errors_carry_position_and_all_messages() -> None:
    with pytest.raises(cel.CelCompileError) as info:
        cel.compile_expression("a +\n  b")
    err = info.value
    assert (err.line, err.col) == (1, 1)
    assert "undeclared reference to 'a'" in err.message
    assert "undeclared reference to 'b'" in err.message


def test_bad_event_values_surface_at_evaluation() -> None:
    expr = cel.compile_expression("event.data")
    with pytest.raises(cel.CelEvalError, match="out of range"):
        expr.evaluate(cel.bind({"data": 2**70}, NOW))
