"""The preference decision: every reason, the grid, defaults and opt-ins, bypasses, quiet hours.

Every test passes a fixed `now`: no real clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from catalog import Decision, decide
from catalog.preferences import quiet_until, resolve_timezone, unknown_names
from schemas.recipient import MAX_GRID_ENTRIES, OptIn, Preferences, QuietHours

NOON = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def run(
    prefs: Preferences,
    defaults: Preferences | None = None,
    *,
    rule_id: str = "promo",
    category: str | None = "marketing",
    channel: str = "email",
    critical: bool = False,
    required: tuple[str, ...] = (),
    timezone: str | None = None,
    now: datetime = NOON,
) -> Decision:
    return decide(
        prefs, defaults, required_categories=required, rule_id=rule_id, category=category,
        channel=channel, critical=critical, timezone=timezone, now=now,
    )  # fmt: skip


def P(**kw: Any) -> Preferences:
    return Preferences.model_validate(kw)


def reason(prefs: Preferences, defaults: Preferences | None = None, **kw: Any) -> str | None:
    d = run(prefs, defaults, **kw)
    assert (d.outcome == "suppress") == (d.reason is not None)
    return d.reason


# --- opt-outs and their reasons ------------------------------------------------------------


def test_no_preferences_sends() -> None:
    assert run(Preferences()) == Decision("send")
    assert run(Preferences(), Preferences()) == Decision("send")


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        ({"categories": ["marketing"]}, "opt-out:category:marketing"),
        ({"channels": ["email"]}, "opt-out:channel:email"),
        ({"rules": ["promo"]}, "opt-out:rule:promo"),
        (
            {"category_channels": {"marketing": ["email"]}},
            "opt-out:category-channel:marketing:email",
        ),
    ],
)
def test_each_opt_out_has_its_reason(prefs: dict[str, Any], expected: str) -> None:
    d = run(P(**prefs))
    assert d == Decision("suppress", reason=expected)


def test_check_order_is_most_specific_first() -> None:
    everything = P(
        rules=["promo"], categories=["marketing"], channels=["email"],
        category_channels={"marketing": ["email"]},
    )  # fmt: skip
    assert reason(everything) == "opt-out:rule:promo"
    assert reason(everything, rule_id="other") == "opt-out:category-channel:marketing:email"
    no_cell = P(categories=["marketing"], channels=["email"])
    assert reason(no_cell) == "opt-out:category:marketing"
    assert reason(P(channels=["email"]), category=None) == "opt-out:channel:email"


def test_the_grid_opts_out_of_one_cell_only() -> None:
    prefs = P(category_channels={"marketing": ["email", "sms"]})
    assert reason(prefs, channel="email") == "opt-out:category-channel:marketing:email"
    assert reason(prefs, channel="sms") == "opt-out:category-channel:marketing:sms"
    assert reason(prefs, channel="push") is None
    assert reason(prefs, category="orders") is None


def test_other_names_are_not_opted_out() -> None:
    prefs = P(categories=["marketing"], channels=["sms"], rules=["promo"])
    assert run(prefs, rule_id="receipt", category="orders", channel="email").outcome == "send"


def test_without_a_category_the_category_levels_are_skipped() -> None:
    prefs = P(categories=["marketing"], category_channels={"marketing": ["email"]})
    assert run(prefs, category=None).outcome == "send"


# --- tenant defaults and opt-ins -----------------------------------------------------------


def test_defaults_opt_out_when_the_recipient_says_nothing() -> None:
    defaults = P(categories=["marketing"], channels=["sms"])
    assert reason(Preferences(), defaults) == "opt-out:category:marketing"
    assert reason(Preferences(), defaults, category="orders", channel="sms") == (
        "opt-out:channel:sms"
    )


def test_the_recipients_own_opt_out_adds_to_the_defaults() -> None:
    defaults = P(channels=["sms"])
    prefs = P(channels=["push"])
    assert reason(prefs, defaults, category="orders", channel="push") == "opt-out:channel:push"
    assert reason(prefs, defaults, category="orders", channel="sms") == "opt-out:channel:sms"


@pytest.mark.parametrize(
    ("default", "opt_in"),
    [
        ({"rules": ["promo"]}, {"rules": ["promo"]}),
        (
            {"category_channels": {"marketing": ["email"]}},
            {"category_channels": {"marketing": ["email"]}},
        ),
        ({"categories": ["marketing"]}, {"categories": ["marketing"]}),
        ({"categories": ["marketing"]}, {"category_channels": {"marketing": ["email"]}}),
        ({"categories": ["marketing"]}, {"rules": ["promo"]}),
        ({"channels": ["email"]}, {"channels": ["email"]}),
        ({"channels": ["email"]}, {"category_channels": {"marketing": ["email"]}}),
    ],
)
def test_an_opt_in_as_specific_and_inside_lifts_a_default(
    default: dict[str, Any], opt_in: dict[str, Any]
) -> None:
    defaults = P(**default)
    assert run(Preferences(), defaults).outcome == "suppress"
    assert run(P(opt_in=opt_in), defaults) == Decision("send")


@pytest.mark.parametrize(
    ("default", "opt_in", "expected"),
    [
        # A rule is not inside a cell or a channel: the default cell/channel stays.
        ({"channels": ["email"]}, {"rules": ["promo"]}, "opt-out:channel:email"),
        (
            {"category_channels": {"marketing": ["email"]}},
            {"rules": ["promo"]},
            "opt-out:category-channel:marketing:email",
        ),
        # A category is more general than a cell: it doesn't lift the cell.
        (
            {"category_channels": {"marketing": ["email"]}},
            {"categories": ["marketing"]},
            "opt-out:category-channel:marketing:email",
        ),
        # A channel doesn't lift a category.
        ({"categories": ["marketing"]}, {"channels": ["email"]}, "opt-out:category:marketing"),
        # Another cell doesn't lift this one's channel.
        (
            {"channels": ["email"]},
            {"category_channels": {"orders": ["email"]}},
            "opt-out:channel:email",
        ),
    ],
)
def test_an_opt_in_lifts_no_default_it_is_not_inside(
    default: dict[str, Any], opt_in: dict[str, Any], expected: str
) -> None:
    assert reason(P(opt_in=opt_in), P(**default)) == expected


def test_a_cell_opt_in_lifts_the_default_category_for_its_channel_only() -> None:
    defaults = P(categories=["marketing"])
    prefs = P(opt_in={"category_channels": {"marketing": ["email"]}})
    assert run(prefs, defaults, channel="email").outcome == "send"
    assert reason(prefs, defaults, channel="sms") == "opt-out:category:marketing"


def test_an_opt_in_never_lifts_the_recipients_own_opt_out() -> None:
    prefs = P(channels=["email"], opt_in={"categories": ["marketing"]})
    assert reason(prefs, P(categories=["marketing"])) == "opt-out:channel:email"


def test_the_defaults_opt_in_is_ignored() -> None:
    defaults = P(opt_in={"channels": ["email"]})
    assert reason(P(channels=["email"]), defaults) == "opt-out:channel:email"


def test_opting_out_of_and_in_to_the_same_entry_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"category 'marketing'.*remove each"):
        P(categories=["marketing"], opt_in={"categories": ["marketing"]})
    with pytest.raises(ValidationError, match=r"category x channel marketing:sms"):
        P(
            category_channels={"marketing": ["sms"]},
            opt_in={"category_channels": {"marketing": ["sms"]}},
        )


def test_an_opt_in_naming_an_unknown_channel_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown channel\(s\) \['fax'\]: use email"):
        OptIn(channels=("fax",))
    with pytest.raises(ValidationError, match=r"category 'x'.*\['fax'\]"):
        OptIn(category_channels={"x": ("fax",)})


# --- critical and required bypass ------------------------------------------------------------

EVERYTHING_OFF = P(
    rules=["promo"], categories=["marketing", "security"], channels=["email"],
    category_channels={"security": ["email"]},
    quiet_hours={"start": "00:00", "end": "23:59"},
)  # fmt: skip


def test_critical_bypasses_opt_outs_and_quiet_hours() -> None:
    assert run(EVERYTHING_OFF, EVERYTHING_OFF, critical=True) == Decision(
        "send", bypassed="critical"
    )


def test_a_required_category_bypasses_and_says_which() -> None:
    d = run(EVERYTHING_OFF, EVERYTHING_OFF, category="security", required=("security",))
    assert d == Decision("send", bypassed="required-category:security")
    # Another category is not bypassed by the required list.
    assert reason(EVERYTHING_OFF, category="marketing", required=("security",)) == (
        "opt-out:rule:promo"
    )


def test_critical_is_named_before_a_required_category() -> None:
    d = run(Preferences(), category="security", required=("security",), critical=True)
    assert d.bypassed == "critical"


def test_an_unbypassed_send_says_nothing_bypassed() -> None:
    assert run(Preferences(), category="security", required=()).bypassed is None


# --- quiet hours -----------------------------------------------------------------------------

NIGHT = P(quiet_hours={"start": "22:00", "end": "07:00"})
PARIS = "Europe/Paris"  # UTC+2 in June, UTC+1 in winter


def at(tz: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))


def test_inside_a_window_across_midnight_holds_until_its_end_in_utc() -> None:
    # 23:30 in Paris on 15 June → 07:00 Paris on 16 June = 05:00 UTC.
    d = run(NIGHT, timezone=PARIS, now=at(PARIS, 2026, 6, 15, 23, 30))
    assert d == Decision(
        "hold", reason="quiet-hours", hold_until=datetime(2026, 6, 16, 5, 0, tzinfo=UTC)
    )
    assert d.hold_until is not None and d.hold_until.tzinfo is UTC
    # 03:00 the next morning: same day's 07:00.
    d = run(NIGHT, timezone=PARIS, now=at(PARIS, 2026, 6, 16, 3, 0))
    assert d.hold_until == datetime(2026, 6, 16, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hh", "mm", "inside"),
    [(21, 59, False), (22, 0, True), (0, 0, True), (6, 59, True), (7, 0, False), (12, 0, False)],
)
def test_the_window_is_start_inclusive_end_exclusive(hh: int, mm: int, inside: bool) -> None:
    d = run(NIGHT, timezone=PARIS, now=at(PARIS, 2026, 6, 15, hh, mm))
    assert (d.outcome == "hold") is inside


def test_a_window_within_one_day() -> None:
    lunch = P(quiet_hours={"start": "12:00", "end": "14:00"})
    d = run(lunch, timezone="UTC", now=NOON + timedelta(minutes=30))
    assert d.hold_until == NOON + timedelta(hours=2)
    assert run(lunch, now=NOON + timedelta(hours=2)).outcome == "send"
    assert run(lunch, now=NOON - timedelta(seconds=1)).outcome == "send"


def test_start_equal_to_end_is_never() -> None:
    never = QuietHours(start="09:00", end="09:00")
    for h in range(24):
        assert quiet_until(never, UTC, NOON.replace(hour=h)) is None


def test_the_recipients_window_wins_and_start_equal_end_switches_the_default_off() -> None:
    defaults = P(quiet_hours={"start": "11:00", "end": "13:00"})
    assert run(Preferences(), defaults).outcome == "hold"
    off = P(quiet_hours={"start": "00:00", "end": "00:00"})
    assert run(off, defaults).outcome == "send"
    own = P(quiet_hours={"start": "11:30", "end": "12:30"})
    assert run(own, defaults).hold_until == NOON + timedelta(minutes=30)


@pytest.mark.parametrize("tz", [None, "", "Not/AZone", "../../etc/passwd", "UTC"])
def test_a_missing_or_unknown_timezone_is_utc(tz: str | None) -> None:
    assert resolve_timezone(tz) is UTC or resolve_timezone(tz) == ZoneInfo("UTC")
    lunch = P(quiet_hours={"start": "11:00", "end": "13:00"})
    assert run(lunch, timezone=tz).hold_until == NOON + timedelta(hours=1)


def test_a_naive_now_is_taken_as_utc() -> None:
    lunch = P(quiet_hours={"start": "11:00", "end": "13:00"})
    assert run(lunch, now=NOON.replace(tzinfo=None)).hold_until == NOON + timedelta(hours=1)


def test_an_opt_out_suppresses_rather_than_holds() -> None:
    prefs = P(categories=["marketing"], quiet_hours={"start": "11:00", "end": "13:00"})
    assert run(prefs).outcome == "suppress"


# --- DST nights (Europe/Paris: forward 29 Mar 2026 02:00→03:00, back 25 Oct 2026 03:00→02:00)


def test_the_window_ends_at_local_end_across_the_spring_forward_night() -> None:
    # 22:00 CET (UTC+1) to 07:00 CEST (UTC+2): 05:00 UTC, seven hours later, not eight.
    d = run(NIGHT, timezone=PARIS, now=at(PARIS, 2026, 3, 28, 23, 0))
    assert d.hold_until == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)


def test_an_end_in_the_skipped_hour_ends_the_window_at_the_jump() -> None:
    # 02:30 doesn't exist on 29 March: the wall clock jumps over it at 01:00 UTC.
    short = P(quiet_hours={"start": "22:00", "end": "02:30"})
    d = run(short, timezone=PARIS, now=at(PARIS, 2026, 3, 29, 1, 15))
    assert d.hold_until == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    # Just after the jump (03:05 CEST) the window is over.
    assert run(short, timezone=PARIS, now=datetime(2026, 3, 29, 1, 5, tzinfo=UTC)).outcome == (
        "send"
    )


def test_the_window_ends_at_local_end_across_the_fall_back_night() -> None:
    # 22:00 CEST to 07:00 CET: 06:00 UTC, ten hours later.
    d = run(NIGHT, timezone=PARIS, now=at(PARIS, 2026, 10, 24, 22, 0))
    assert d.hold_until == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)


def test_an_end_in_the_repeated_hour_is_its_first_then_its_second_occurrence() -> None:
    short = P(quiet_hours={"start": "22:00", "end": "02:30"})
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    # 01:00 CEST: held until the first 02:30.
    assert (
        run(short, timezone=PARIS, now=datetime(2026, 10, 24, 23, 0, tzinfo=UTC)).hold_until
        == first
    )
    # 02:45 CEST (00:45 UTC): past the end, sent.
    assert (
        run(short, timezone=PARIS, now=datetime(2026, 10, 25, 0, 45, tzinfo=UTC)).outcome == "send"
    )
    # 02:10 CET, the clock came back into the window: held until the second 02:30.
    assert (
        run(short, timezone=PARIS, now=datetime(2026, 10, 25, 1, 10, tzinfo=UTC)).hold_until
        == second
    )


def test_hold_until_is_always_after_now() -> None:
    # Every 7 minutes across both DST nights in several zones, for a few windows.
    windows = [("22:00", "07:00"), ("22:00", "02:30"), ("01:30", "03:30"), ("02:00", "03:00")]
    zones = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    starts = [datetime(2026, 3, 7, tzinfo=UTC), datetime(2026, 3, 28, tzinfo=UTC),
              datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 31, tzinfo=UTC),
              datetime(2026, 4, 4, tzinfo=UTC)]  # fmt: skip
    for start, end in windows:
        qh = QuietHours(start=start, end=end)
        for zone in zones:
            tz = ZoneInfo(zone)
            for base in starts:
                for step in range(0, 3 * 24 * 60, 7):
                    now = base + timedelta(minutes=step)
                    until = quiet_until(qh, tz, now)
                    if until is not None:
                        assert now < until <= now + timedelta(hours=25), (zone, start, end, now)
                        # At its end the wall clock reads `end`, or it just jumped past it.
                        local = until.astimezone(tz)
                        before = (until - timedelta(seconds=1)).astimezone(tz)
                        reached = (local.hour, local.minute) == tuple(map(int, end.split(":")))
                        assert reached or local.utcoffset() != before.utcoffset(), (zone, now)


# ------------------------------------------------------------------ names the catalog has


def test_unknown_categories_and_rules_are_named_with_the_valid_ones() -> None:
    cats, rules = {"billing", "news"}, {"promo"}
    assert unknown_names(Preferences(categories=("news",), rules=("promo",)), cats, rules) is None
    got = unknown_names(Preferences(categories=("news", "nope")), cats, rules)
    assert got == (
        "preferences.categories: unknown category 'nope'; the catalog's categories are "
        "billing, news"
    )
    cell = unknown_names(Preferences(category_channels={"x": ("email",)}), cats, rules)
    assert cell is not None and cell.startswith(
        "preferences.category_channels: unknown category 'x'"
    )
    rule = unknown_names(Preferences(opt_in=OptIn(rules=("gone",))), cats, rules)
    assert rule == "preferences.opt_in.rules: unknown rule 'gone'; the catalog's rules are promo"


def test_preference_lists_are_bounded() -> None:
    with pytest.raises(ValidationError, match="at most 256 items"):
        Preferences(categories=tuple(f"c{i}" for i in range(MAX_GRID_ENTRIES + 1)))
    with pytest.raises(ValidationError, match="at most 256 items"):
        Preferences(rules=tuple(f"r{i}" for i in range(MAX_GRID_ENTRIES + 1)))
    with pytest.raises(ValidationError, match="unknown channel"):
        Preferences(channels=("pigeon",))
