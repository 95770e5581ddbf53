"""The preference decision for one notification: send it, suppress it, or hold it. Pure.

`decide(prefs, defaults, …)` reads a recipient's `Preferences` (schemas/recipient.py) with the
tenant's defaults underneath and returns a `Decision`. No I/O, no clock: `now` is passed in.

**Check order** (the first that applies decides):

1. *Bypass.* `critical=True` (a rule of priority `critical`) → `send`, `bypassed="critical"`;
   else a `category` in `required_categories` → `send`, `bypassed="required-category:<c>"`.
   A bypass skips opt-outs, quiet hours and caps (the caller asks no cap for it).
2. *Opt-outs, most specific first*, each the recipient's own or a tenant default the
   recipient did not lift (see below) → `suppress` with the reason:
   `opt-out:rule:<rule id>`, then `opt-out:category-channel:<category>:<channel>`, then
   `opt-out:category:<category>`, then `opt-out:channel:<channel>`. With `category=None`
   the two category levels are skipped.
3. *Quiet hours* (the recipient's window, else the defaults'): inside → `hold` until the
   window ends (`hold_until`, aware UTC), reason `quiet-hours`.
4. Otherwise `send`.

**Defaults and opt-ins.** An effective opt-out is the recipient's own, or the defaults' one
unless the recipient's `opt_in` lifts it. An opt-in entry lifts a default opt-out when it is
at least as specific and inside it: the default rule `r` is lifted by opt-in rule `r`; the
default cell `c:ch` by opt-in cell `c:ch`; the default category `c` by opt-in category `c`,
any opt-in cell `c:ch` (for that channel) or opt-in rule `r` of category `c`; the default
channel `ch` by opt-in channel `ch` or any opt-in cell `c:ch` (for that category). The
recipient's own opt-outs are never lifted; the defaults' `opt_in` is ignored.

**Quiet hours** are wall-clock times in the recipient's `timezone` (IANA name, zoneinfo).
A missing or unknown timezone means UTC. The window is `[start, end)`; `start > end`
crosses midnight (22:00-07:00); `start == end` is no window at all, so a recipient switches a
tenant default window off with e.g. `{"start": "00:00", "end": "00:00"}`. `hold_until` is
the first instant after `now` at which the wall clock reaches `end`. On the night clocks go
forward, an `end` inside the skipped hour ends the window at the jump (02:30 → the instant
the clock goes from 02:00 to 03:00); on the night they go back, an `end` inside the repeated
hour is its first occurrence, and a notification arriving in the repeated stretch before
`end` is held until `end` comes round the second time (the window is wall-clock).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.recipient import Preferences, QuietHours

__all__ = [
    "QUIET_HOURS",
    "Decision",
    "decide",
    "quiet_until",
    "resolve_timezone",
    "unknown_defaults",
    "unknown_names",
]

QUIET_HOURS = "quiet-hours"

Outcome = Literal["send", "suppress", "hold"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one notification, and why.

    `reason`: the opt-out (`opt-out:…`) for `suppress`, `quiet-hours` for `hold`, None for
    `send`. `hold_until`: with `hold` only, aware UTC. `bypassed`: with a bypassed `send`,
    `critical` or `required-category:<c>`, for the status to show.
    """

    outcome: Outcome
    reason: str | None = None
    hold_until: datetime | None = None
    bypassed: str | None = None


_SEND = Decision("send")


def decide(
    prefs: Preferences,
    defaults: Preferences | None,
    *,
    required_categories: Collection[str],
    rule_id: str,
    category: str | None,
    channel: str,
    critical: bool,
    timezone: str | None,
    now: datetime,
) -> Decision:
    """The decision for one notification (module docstring: the order and the reasons).

    `now` must be timezone-aware (a naive one is taken as UTC). Never raises for any
    `Preferences` the schema accepts.
    """
    if critical:
        return Decision("send", bypassed="critical")
    if category is not None and category in required_categories:
        return Decision("send", bypassed=f"required-category:{category}")
    reason = _opted_out(prefs, defaults, rule_id, category, channel)
    if reason is not None:
        return Decision("suppress", reason=reason)
    window = prefs.quiet_hours
    if window is None and defaults is not None:
        window = defaults.quiet_hours
    if window is not None:
        until = quiet_until(window, resolve_timezone(timezone), now)
        if until is not None:
            return Decision("hold", reason=QUIET_HOURS, hold_until=until)
    return _SEND


def unknown_names(
    prefs: Preferences, categories: Collection[str], rules: Collection[str]
) -> str | None:
    """What in `prefs` names a category or rule the catalog doesn't have, with the valid
    ones, or None when all are known; pure. (Unknown channels the schema refuses itself.)"""
    for where, g in (("", prefs), ("opt_in.", prefs.opt_in)):
        fields = (
            ("categories", g.categories, "category", categories),
            ("category_channels", g.category_channels, "category", categories),
            ("rules", g.rules, "rule", rules),
        )
        for field, names, kind, known in fields:
            bad = ", ".join(map(repr, sorted(set(names) - set(known))))
            if bad:
                plural = "rules" if kind == "rule" else "categories"
                return (
                    f"preferences.{where}{field}: unknown {kind} {bad}; "
                    f"the catalog's {plural} are {_some(known)}"
                )
    return None


def unknown_defaults(
    prefs: Preferences, required: Collection[str], categories: Collection[str],
    rules: Collection[str], *, required_field: str = "required_categories",
) -> str | None:  # fmt: skip
    """`unknown_names` of a tenant's default preferences, then its required categories the
    catalog doesn't have (named `required_field`, with the valid ones); None when all are
    known; pure."""
    bad = unknown_names(prefs, categories, rules)
    if bad is not None:
        return bad
    missing = ", ".join(map(repr, sorted(set(required) - set(categories))))
    if missing:
        return (f"{required_field}: unknown category {missing}; "
                f"the catalog's categories are {_some(categories)}")  # fmt: skip
    return None


def _some(names: Collection[str], limit: int = 50) -> str:
    shown = ", ".join(sorted(names)[:limit]) or "(none)"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _opted_out(
    prefs: Preferences,
    defaults: Preferences | None,
    rule_id: str,
    category: str | None,
    channel: str,
) -> str | None:
    # Most specific first; at each level the recipient's own opt-out, then the default's
    # unless an opt-in at least as specific lifts it (module docstring).
    grid = prefs.category_channels
    d = defaults
    o = prefs.opt_in
    cell_in = category is not None and channel in o.category_channels.get(category, ())
    if rule_id in prefs.rules or (d is not None and rule_id in d.rules and rule_id not in o.rules):
        return f"opt-out:rule:{rule_id}"
    if category is not None:
        if channel in grid.get(category, ()) or (
            d is not None and channel in d.category_channels.get(category, ()) and not cell_in
        ):
            return f"opt-out:category-channel:{category}:{channel}"
        if category in prefs.categories or (
            d is not None
            and category in d.categories
            and not (category in o.categories or cell_in or rule_id in o.rules)
        ):
            return f"opt-out:category:{category}"
    if channel in prefs.channels or (
        d is not None and channel in d.channels and not (channel in o.channels or cell_in)
    ):
        return f"opt-out:channel:{channel}"
    return None


@functools.lru_cache(maxsize=4096)
def resolve_timezone(name: str | None) -> tzinfo:
    """The zone named `name` (IANA, e.g. `Europe/Paris`); UTC when None, empty or unknown."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        return UTC


@functools.lru_cache(maxsize=1024)
def _clock(text: str) -> time:
    hh, mm = text.split(":")
    return time(int(hh), int(mm))


def quiet_until(window: QuietHours, tz: tzinfo, now: datetime) -> datetime | None:
    """When `window` ends if `now` is inside it (aware UTC), else None. Pure.

    Inside means the wall clock in `tz` reads within `[start, end)` (crossing midnight when
    start > end; start == end is never). The end is the first instant after `now` at which
    the wall clock reaches `end` (module docstring: the DST nights).
    """
    start, end = _clock(window.start), _clock(window.end)
    if start == end:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    now_utc = now.astimezone(UTC)
    for offset in range(3):  # the first day always has it; the others are a safety net
        for instant in _instants(day + timedelta(days=offset), end, tz):
            if instant > now_utc:
                return instant
    return None  # pragma: no cover - unreachable: a wall time recurs every day


def _instants(day: date, at: time, tz: tzinfo) -> list[datetime]:
    """The UTC instants at which the wall clock in `tz` reaches `at` on `day`, in order.

    One normally; two in a repeated hour (fold 0, then fold 1); in a skipped hour, the one
    instant of the jump over it.
    """
    first = datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
    second = datetime.combine(day, at, tzinfo=tz).replace(fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first < second:
        return [first, second]
    # A gap: fold=1 reads `at` with the offset after the jump (an instant before it), fold=0
    # with the offset before (an instant after it). The jump is in between: find it.
    return [_jump(second, first, tz)]


def _jump(lo: datetime, hi: datetime, tz: tzinfo) -> datetime:
    """The first instant in (lo, hi] whose UTC offset in `tz` is hi's (the transition)."""
    after = hi.astimezone(tz).utcoffset()
    a, b = int(lo.timestamp()), int(hi.timestamp())
    while b - a > 1:
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == after:
            b = mid
        else:
            a = mid
    return datetime.fromtimestamp(b, UTC)
