"""Caps, the pure side: parsing the config, keys, reasons, which caps apply, behaviours."""

from __future__ import annotations

from typing import Any

import pytest

from catalog import CapCheck, CapConfigError, CapRule, cap_checks, cap_keys, parse_caps
from catalog.caps import CAP_KEY_PREFIX, MAX_CAP_LIMIT, check_references

PUSH_HOURLY = {"scope": "recipient_channel", "channels": ["push"], "limit": 3, "window": "1h"}
BUDGET = {"scope": "recipient", "limit": 10, "window": "1d"}
TENANT_SMS = {"scope": "tenant_channel", "channels": ["sms"], "limit": 100, "window_s": 60}


def one(**kw: Any) -> CapRule:
    (cap,) = parse_caps([kw])
    return cap


def test_parse_reads_every_scope_and_window_spelling() -> None:
    caps = parse_caps([PUSH_HOURLY, BUDGET, TENANT_SMS])
    assert [(c.scope, c.limit, c.window_s) for c in caps] == [
        ("recipient_channel", 3, 3600), ("recipient", 10, 86400), ("tenant_channel", 100, 60),
    ]  # fmt: skip
    for text, seconds in [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("45", 45)]:
        assert one(scope="recipient", limit=1, window=text).window_s == seconds
    assert one(scope="recipient", limit=1, window=30).window_s == 30


def test_no_caps() -> None:
    assert parse_caps(None) == ()
    assert parse_caps([]) == ()


def test_every_problem_is_named_at_its_place() -> None:
    raw = [
        {"scope": "recipient_channel", "limit": 0, "window": "1h"},
        {"scope": "galaxy", "limit": 1, "window": "1h"},
        {"scope": "recipient", "limit": 1, "window": "soon"},
        {"scope": "recipient", "limit": 1, "window": "1h", "channels": ["fax"]},
        {"scope": "recipient", "limit": 1, "window": "1h", "behaviour": "drop"},
        {"scope": "recipient", "limit": 1, "window": "1h", "colour": "red"},
        {"scope": "recipient", "window": "1h"},
        "not a mapping",
        {"scope": "recipient", "limit": True, "window": "1h"},
        {"scope": "recipient", "limit": 1, "window": "60d"},
    ]
    with pytest.raises(CapConfigError) as err:
        parse_caps(raw)
    problems = err.value.problems
    text = "\n".join(problems)
    assert "caps[0].limit: Input should be greater than or equal to 1 (got 0)" in text
    assert "caps[1].scope:" in text and "'galaxy'" in text
    assert "caps[2].window" in text and "90s, 15m, 1h, 1d" in text
    assert "caps[3].channels:" in text and "unknown channel(s) ['fax']: use email" in text
    assert "caps[4].behaviour:" in text and "'suppress' or 'defer'" in text
    assert "caps[5].colour: Extra inputs are not permitted" in text
    assert "caps[6].limit: Field required" in text and "(got" not in problems[6]
    assert "caps[7]: must be a mapping, got str" in text
    assert "caps[8].limit:" in text
    assert "caps[9].window" in text and "2678400" in text
    assert "docs/recipients.md#caps" in str(err.value)


def test_a_config_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(CapConfigError, match=r"caps: must be a list of caps, got dict"):
        parse_caps({"scope": "recipient"})


def test_two_caps_counting_the_same_thing_are_refused() -> None:
    with pytest.raises(CapConfigError, match=r"caps\[1\]: counts the same .* as caps\[0\]"):
        parse_caps([BUDGET, {**BUDGET, "limit": 20}])
    # Different windows or filters count different things: fine.
    parse_caps([BUDGET, {**BUDGET, "window": "1h"}, {**BUDGET, "categories": ["marketing"]}])


def test_limits_are_bounded() -> None:
    with pytest.raises(CapConfigError, match="less than or equal to 1000000"):
        parse_caps([{**BUDGET, "limit": MAX_CAP_LIMIT + 1}])


def test_reasons_name_scope_channel_limit_and_window() -> None:
    rc, budget, tc = parse_caps([PUSH_HOURLY, BUDGET, TENANT_SMS])
    assert rc.reason("push") == "cap:recipient_channel:push:3/3600s"
    assert budget.reason("email") == "cap:recipient:10/86400s"
    assert tc.reason("sms") == "cap:tenant_channel:sms:100/60s"


def test_keys_by_scope() -> None:
    rc, budget, tc = parse_caps([PUSH_HOURLY, BUDGET, TENANT_SMS])
    assert cap_keys(rc, "acme", "u1", "push") == f"{CAP_KEY_PREFIX}rc:3600:{rc.ident}:acme:u1:push"
    assert (
        cap_keys(budget, "acme", "u1", "push") == f"{CAP_KEY_PREFIX}r:86400:{budget.ident}:acme:u1"
    )
    assert cap_keys(tc, "acme", "u1", "sms") == f"{CAP_KEY_PREFIX}tc:60:{tc.ident}:acme:sms"
    assert cap_keys(budget, None, "u1", "push") == cap_keys(budget, "", "u1", "push")
    assert cap_keys(rc, "acme", "u1", "push", prefix="t:").startswith("t:rc:")


def test_long_or_odd_ids_are_hashed_and_keys_stay_bounded() -> None:
    rc = one(**PUSH_HOURLY)
    long_id = "u" * 10_000
    key = cap_keys(rc, "t" * 256, long_id, "push")
    assert len(key) < len(CAP_KEY_PREFIX) + 120
    assert long_id[:65] not in key
    # Ids that would run into each other through a ':' are told apart.
    assert cap_keys(rc, "a:b", "c", "push") != cap_keys(rc, "a", "b:c", "push")
    # A plain id that looks like a hash is not one: '#' is never kept as is.
    hashed = cap_keys(rc, "acme", "x:y", "push").split(":")[-2]
    assert hashed.startswith("#") and cap_keys(rc, "acme", hashed, "push") != cap_keys(
        rc, "acme", "x:y", "push"
    )
    # Stable across calls (and processes: BLAKE2b, no salt).
    assert cap_keys(rc, "t" * 256, long_id, "push") == key


def test_the_key_ignores_limit_and_behaviour_but_not_what_is_counted() -> None:
    a = one(**BUDGET)
    assert cap_keys(a, "t", "u", "email") == cap_keys(
        one(**{**BUDGET, "limit": 99, "behaviour": "defer"}), "t", "u", "email"
    )
    assert a.ident != one(**{**BUDGET, "categories": ["marketing"]}).ident
    assert a.ident != one(**{**BUDGET, "window": "2d"}).ident


def test_which_caps_apply() -> None:
    caps = parse_caps(
        [PUSH_HOURLY, BUDGET, {**BUDGET, "window": "1h", "categories": ["marketing"]}]
    )
    push_marketing = cap_checks(
        caps, tenant="t", recipient="u", channel="push", category="marketing", rule_id="promo"
    )
    assert [c.cap for c in push_marketing] == [
        "cap:recipient_channel:push:3/3600s", "cap:recipient:10/86400s", "cap:recipient:10/3600s",
    ]  # fmt: skip
    email_orders = cap_checks(
        caps, tenant="t", recipient="u", channel="email", category="orders", rule_id="receipt"
    )
    assert [c.cap for c in email_orders] == ["cap:recipient:10/86400s"]
    assert email_orders[0] == CapCheck(
        key=cap_keys(caps[1], "t", "u", "email"), limit=10, window_ms=86_400_000,
        cap="cap:recipient:10/86400s", behaviour="suppress",
    )  # fmt: skip
    no_category = cap_checks(
        caps, tenant="t", recipient="u", channel="email", category=None, rule_id="r"
    )
    assert len(no_category) == 1


def test_an_empty_channel_list_counts_each_channel_apart() -> None:
    every = one(scope="recipient_channel", limit=5, window="1h")
    assert every.applies("sms", None) and every.applies("push", None)
    assert cap_keys(every, "t", "u", "sms") != cap_keys(every, "t", "u", "push")


def test_behaviour_rule_beats_category_beats_default() -> None:
    cap = one(
        **BUDGET, behaviour="suppress",
        behaviour_by_category={"orders": "defer"},
        behaviour_by_rule={"promo": "defer", "receipt": "suppress"},
    )  # fmt: skip
    assert cap.behaviour_for("other", "marketing") == "suppress"
    assert cap.behaviour_for("other", "orders") == "defer"
    assert cap.behaviour_for("promo", "marketing") == "defer"
    assert cap.behaviour_for("receipt", "orders") == "suppress"
    assert cap.behaviour_for(None, None) == "suppress"
    (check,) = cap_checks(
        [cap], tenant="t", recipient="u", channel="sms", category="orders", rule_id="x"
    )
    assert check.behaviour == "defer"


def test_references_to_unknown_categories_and_rules_are_reported() -> None:
    caps = parse_caps(
        [{**BUDGET, "categories": ["marketing", "nope"], "behaviour_by_rule": {"ghost": "defer"}}]
    )
    problems = check_references(caps, categories={"marketing", "orders"}, rule_ids={"promo"})
    assert problems == [
        "caps[0].categories: unknown ['nope']; known: marketing, orders",
        "caps[0].behaviour_by_rule: unknown ['ghost']; known: promo",
    ]
    assert check_references(parse_caps([BUDGET]), categories=(), rule_ids=()) == []
