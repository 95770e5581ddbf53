"""Babel-backed template filters: money, numbers, dates, durations and plural forms.

The locale is the one the template variant is rendered for (`de-AT` renders with Austrian
formats even when only `de` files exist); the `default` variant uses the catalog's default
locale, `en` unless `load_catalog(default_locale=...)` says otherwise.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from babel import Locale, UnknownLocaleError, dates, numbers
from jinja2 import pass_context

__all__ = ["FILTERS", "babel_locale", "render_locale"]

# The locale of the render in progress (per thread/task, like the render deadline).
render_locale: contextvars.ContextVar[str] = contextvars.ContextVar(
    "tidings_render_locale", default="en"
)


@functools.lru_cache(maxsize=256)
def babel_locale(name: str) -> Locale:
    """Babel's Locale for `de-AT`/`de_AT`/`de`, falling back to English; raises nothing."""
    for candidate in (name.replace("-", "_"), name.replace("-", "_").split("_")[0]):
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return Locale.parse("en")


def _loc() -> Locale:
    return babel_locale(render_locale.get())


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    try:
        return Decimal(str(value))  # str() first: 12.1 stays 12.1, not 12.0999...
    except InvalidOperation:
        raise TypeError(f"expected a number, got {value!r}") from None


def _when(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = dt.datetime.fromisoformat(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def money(
    amount: Any,
    currency: str = "EUR",
    format_type: Literal["name", "standard", "accounting"] = "standard",
) -> str:
    """`{{ total | money('EUR') }}` -> `€12.50` (en), `12,50 €` (de), `€ 12,50` (de-AT)."""
    return numbers.format_currency(
        _decimal(amount), currency, locale=_loc(), format_type=format_type
    )


def number(value: Any, digits: int | None = None) -> str:
    """`{{ 1234.5 | number }}` -> `1,234.5` (en), `1.234,5` (de); `digits` fixes decimals."""
    if digits is None:
        return numbers.format_decimal(_decimal(value), locale=_loc())
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return numbers.format_decimal(_decimal(value), format=pattern, locale=_loc())


def percent(value: Any) -> str:
    """`{{ 0.25 | percent }}` -> `25%` (en), `25 %` (de)."""
    return numbers.format_percent(_decimal(value), locale=_loc())


def date(value: Any, format: str = "medium", tz: str = "UTC") -> str:
    """`{{ '2025-03-01T10:00:00Z' | date }}` -> `Mar 1, 2025`; format short|medium|long|full."""
    return dates.format_date(_when(value).astimezone(dates.get_timezone(tz)), format, _loc())


def datetime(value: Any, format: str = "medium", tz: str = "UTC") -> str:
    """`{{ ts | datetime('short', 'Europe/Vienna') }}`: date and time in zone `tz`."""
    return dates.format_datetime(_when(value), format, dates.get_timezone(tz), _loc())


def time(value: Any, format: str = "short", tz: str = "UTC") -> str:
    """`{{ ts | time(tz='Europe/Berlin') }}` -> `11:00`."""
    return dates.format_time(_when(value), format, dates.get_timezone(tz), _loc())


def duration(
    seconds: Any,
    granularity: Literal["year", "month", "week", "day", "hour", "minute", "second"] = "second",
) -> str:
    """`{{ 5400 | duration }}` -> `2 hours` (rounded), `2 Stunden` (de)."""
    delta = dt.timedelta(seconds=float(_decimal(seconds)))
    return dates.format_timedelta(delta, granularity=granularity, locale=_loc())


def plural(count: Any, one: str, other: str, **forms: str) -> str:
    """`{{ n | plural('item', 'items') }}`: the form for `n` under the locale's plural rule.

    Extra forms by CLDR name (`zero`, `two`, `few`, `many`) serve languages that have them;
    a missing form falls back to `other`. `%d` in the chosen form is replaced by `n`.
    """
    n = _decimal(count)
    kind = _loc().plural_form(n)
    chosen = {"one": one, "other": other, **forms}.get(kind, other)
    return chosen.replace("%d", str(count))


def _at_render(fn: Callable[..., str]) -> Callable[..., str]:
    # pass_context stops Jinja from folding `{{ 5 | money }}` into a constant at compile
    # time, when no locale is set yet.
    @pass_context
    @functools.wraps(fn)
    def wrapper(_context: Any, *args: Any, **kwargs: Any) -> str:
        return fn(*args, **kwargs)

    return wrapper


_PLAIN: dict[str, Callable[..., str]] = {
    "money": money,
    "number": number,
    "percent": percent,
    "date": date,
    "datetime": datetime,
    "time": time,
    "duration": duration,
    "plural": plural,
}
FILTERS: dict[str, Callable[..., str]] = {name: _at_render(fn) for name, fn in _PLAIN.items()}
