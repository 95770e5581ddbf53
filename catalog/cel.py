"""Thin adapter over cel-expr-python: the only module of tidings that imports it.

Expressions see two variables: `event` (the envelope as a map with keys id, type, source,
subject, time, tenant, data) and `now` (a timestamp). The strings, math and optional
extensions are loaded so rules can write `event.data.email.lowerAscii()` or
`event.?data.name.orValue('there')`.

Custom functions (documented in docs/catalog.md), all pure and deterministic:

- `bucket(key, n)`: a stable bucket 0..n-1 of string `key` (sha256), for gradual rollouts;
- `sha256(s)`: hex sha256 of string `s`, for idempotency keys that must not leak data;
- `emailDomain(s)`: the lower-cased domain of an email address, "" if `s` has no `@`;
- `isEmail(s)` / `isPhone(s)`: whether `s` looks like an email address / an E.164 number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from cel_expr_python import cel
from cel_expr_python.ext import ext_math, ext_optional, ext_strings

from catalog.exceptions import CatalogError

__all__ = [
    "FUNCTIONS",
    "Bindings",
    "CelCompileError",
    "CelEvalError",
    "Expected",
    "Expression",
    "bind",
    "compile_expression",
    "is_email",
    "is_phone",
]

Expected = Literal["bool", "recipients", "string", "any"]

_T: Any = cel.Type
# Type *names*, because Type.is_assignable_from(DYN) is False even for BOOL and so can't
# express "may be a bool at runtime".
_ACCEPTED: dict[str, frozenset[str]] = {
    "bool": frozenset({"BOOL", "DYN"}),
    "recipients": frozenset({"STRING", "DYN", "LIST<STRING>", "LIST<DYN>"}),
    "string": frozenset({"STRING", "DYN"}),
}
_WANTED = {"bool": "a bool", "recipients": "a string or a list of strings", "string": "a string"}
_ERROR_AT = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


def _bucket(key: str, n: int) -> int:
    if n <= 0:
        raise ValueError(f"bucket count must be positive, got {n}")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % n


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _email_domain(address: str) -> str:
    return address.rsplit("@", 1)[1].strip().lower() if "@" in address else ""


def is_email(text: str) -> bool:
    """Whether `text` looks like an email address (one `@`, a dot in the domain)."""
    return _EMAIL.fullmatch(text) is not None


def is_phone(text: str) -> bool:
    """Whether `text` is an E.164 phone number (`+` then 7 to 15 digits)."""
    return _PHONE.fullmatch(text) is not None


def _fn(name: str, result: Any, params: list[Any], impl: Any) -> Any:
    overload_id = "_".join([name, *(str(p.name()).lower() for p in params)])
    return cel.FunctionDecl(name, [cel.Overload(overload_id, result, params, impl=impl)])


FUNCTIONS: tuple[str, ...] = ("bucket", "sha256", "emailDomain", "isEmail", "isPhone")

_env: Any = cel.NewEnv(
    # `recipient`: the directory's record of a `- user:` recipient ({} for any other).
    variables={
        "event": _T.Map(_T.STRING, _T.DYN),
        "now": _T.TIMESTAMP,
        "recipient": _T.Map(_T.STRING, _T.DYN),
    },
    extensions=[ext_strings.ExtStrings(), ext_math.ExtMath(), ext_optional.ExtOptional()],
    functions=[
        _fn("bucket", _T.INT, [_T.STRING, _T.INT], _bucket),
        _fn("sha256", _T.STRING, [_T.STRING], _sha256),
        _fn("emailDomain", _T.STRING, [_T.STRING], _email_domain),
        _fn("isEmail", _T.BOOL, [_T.STRING], is_email),
        _fn("isPhone", _T.BOOL, [_T.STRING], is_phone),
    ],
)
_ERROR: Any = _T.ERROR
# Result types whose .value() already is the plain Python value we want (fast path).
_SCALARS: frozenset[str] = frozenset({"BOOL", "INT", "UINT", "DOUBLE", "STRING", "NULL"})


class CelCompileError(CatalogError):
    """An expression does not parse or type-check; `line`/`col` are 1-based within it."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        self.message = message
        self.line = line
        self.col = col
        super().__init__(message)


class CelEvalError(CatalogError):
    """An expression failed at runtime or yielded a value Python can't represent plainly."""


class Bindings:
    """The variables of one evaluation, built once per event and shared by every expression."""

    __slots__ = ("_activation",)

    def __init__(self, activation: Any) -> None:
        self._activation = activation


def bind(
    event: Mapping[str, Any], now: dt.datetime, recipient: Mapping[str, Any] | None = None
) -> Bindings:
    """Bind `event`, `now` and `recipient` ({} when None) for evaluation; raises nothing (bad
    values surface at evaluation)."""
    return Bindings(
        _env.Activation(data={"event": event, "now": now, "recipient": recipient or {}})
    )


class Expression:
    """A compiled, type-checked CEL expression."""

    __slots__ = ("_program", "result_type", "source")

    def __init__(self, source: str, program: Any, result_type: str) -> None:
        self.source = source
        self.result_type = result_type
        self._program = program

    def evaluate(self, bindings: Bindings) -> Any:
        """Evaluate to str, int, float, bool, list, dict or None; raises CelEvalError."""
        try:
            result = self._program.eval(bindings._activation)
            kind = result.type()
            if kind == _ERROR:
                raise CelEvalError(str(result.value()))
            if kind.name() in _SCALARS:
                return result.value()
            value = result.plain_value()
        except RuntimeError as exc:  # the binding's own failures, outside ERROR values
            raise CelEvalError(str(exc)) from None
        return _plain(value)

    def __repr__(self) -> str:
        return f"Expression({self.source!r}, result_type={self.result_type!r})"


def compile_expression(source: str, expected: Expected = "any") -> Expression:
    """Parse and type-check `source`; raises CelCompileError if it can't yield `expected`."""
    # The binding reports bad input as RuntimeError, from return_type() too (e.g. a map
    # literal with bytes keys); anything else it raises is caught as well, so that a rule
    # can never crash the loader.
    try:
        program = _env.compile(source)
        result_type = str(program.return_type().name())
    except Exception as exc:
        raise _compile_error(str(exc)) from None
    accepted = _ACCEPTED.get(expected)
    if accepted is not None and result_type not in accepted:
        raise CelCompileError(
            f"expression yields {result_type.lower()}, but it must yield {_WANTED[expected]}"
        )
    return Expression(source, program, result_type)


def _compile_error(text: str) -> CelCompileError:
    found = _ERROR_AT.findall(text)
    if not found:
        return CelCompileError(text.strip().splitlines()[0] if text.strip() else "invalid")
    line, col, _ = found[0]
    return CelCompileError("; ".join(m.strip() for _, _, m in found), int(line), int(col))


def _plain(value: Any) -> Any:
    # Kept JSON-shaped: matches travel on Kafka and feed templates, neither wants CEL types.
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray):
        raise CelEvalError("result contains bytes; convert them with string(...) in the rule")
    if isinstance(value, _T):
        return str(value.name())
    raise CelEvalError(f"result contains a {type(value).__name__}, which has no plain form")


def _plain_key(key: Any) -> Any:
    if isinstance(key, str | bool | int):
        return key
    raise CelEvalError(f"result has a map key of type {type(key).__name__}")
