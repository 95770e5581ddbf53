"""Rule fields beyond the basics: channel policy, recipient kinds, tenants, idempotency key,
locale, and the custom CEL functions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from catalog import Catalog, CatalogLoadError, RuleEvaluationError, cel, load_catalog

NOW = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
BASE = """\
rules:
  - id: r1
    version: 1
    events: [user.registered]
    recipients: %s
    channels: %s
    template: t
    category: c
%s"""
FILES = {
    "templates/t/email/subject.txt.j2": "s",
    "templates/t/email/body.txt.j2": "b",
    "templates/t/sms/text.txt.j2": "x",
    "templates/t/push/title.txt.j2": "t",
    "templates/t/push/body.txt.j2": "b",
    "templates/t/webhook/body.json.j2": "{}",
}


def build(make_catalog: Any, recipients: str, channels: str, extra: str = "") -> Catalog:
    return load_catalog(make_catalog({"rules.yaml": BASE % (recipients, channels, extra), **FILES}))


def run(catalog: Catalog, tenant: str = "", **data: Any) -> list[tuple[str, str, str]]:
    event = {"id": "e1", "type": "user.registered", "tenant": tenant, "data": data}
    return [(m.recipient, m.recipient_kind, m.channel) for m in catalog.evaluate(event, NOW)]


def test_policy_all_sends_each_recipient_the_channels_that_reach_it(make_catalog: Any) -> None:
    cat = build(make_catalog, "[event.data.to]", "[push, email, sms]")
    assert run(cat, to=["u1", "a@x.io", "+491511234567"]) == [
        ("u1", "user", "push"),
        ("u1", "user", "email"),
        ("u1", "user", "sms"),
        ("a@x.io", "email", "email"),
        ("+491511234567", "phone", "sms"),
    ]


def test_first_available_picks_one_channel_and_lists_fallbacks(make_catalog: Any) -> None:
    cat = build(
        make_catalog,
        "[{user: event.data.id}]",
        "[push, sms, email]",
        "    channel_policy: first-available\n",
    )
    [match] = cat.evaluate({"id": "e", "type": "user.registered", "data": {"id": "a@x.io"}}, NOW)
    # A declared user id stays a user id even when it looks like an address.
    assert (match.recipient_kind, match.channel, match.fallback_channels) == (
        "user",
        "push",
        ("sms", "email"),
    )


def test_explicit_kind_no_channel_reaches_is_a_located_error(make_catalog: Any) -> None:
    with pytest.raises(CatalogLoadError) as info:
        build(make_catalog, "\n      - phone: event.data.phone", "[email]")
    [problem] = info.value.problems
    assert (problem.line, problem.col) == (6, 9)
    assert "no channel of the rule can reach a phone recipient; add one of sms" in str(problem)


def test_unreachable_address_at_runtime_is_a_rule_error(make_catalog: Any) -> None:
    cat = build(make_catalog, "[event.data.to]", "[push]")
    with pytest.raises(RuleEvaluationError, match="is a email address, which none of the chan"):
        run(cat, to="a@x.io")


def test_tenant_scope(make_catalog: Any) -> None:
    cat = build(make_catalog, "[event.data.to]", "[email]", "    tenants: [acme, 'beta-*']\n")
    assert run(cat, tenant="acme", to="a@x.io") == [("a@x.io", "email", "email")]
    assert run(cat, tenant="beta-7", to="a@x.io") == [("a@x.io", "email", "email")]
    assert run(cat, tenant="globex", to="a@x.io") == []
    assert run(cat, to="a@x.io") == []  # no tenant: only unscoped rules


def test_idempotency_key_and_locale(make_catalog: Any) -> None:
    extra = (
        "    idempotency_key: \"sha256(event.data.to) + ':' + event.id\"\n"
        "    locale: \"event.data.?lang.orValue('')\"\n"
    )
    cat = build(make_catalog, "[event.data.to]", "[email]", extra)
    event = {"id": "e1", "type": "user.registered", "data": {"to": "a@x.io", "lang": "de-AT"}}
    [match] = cat.evaluate(event, NOW)
    assert match.idempotency_key == cel.compile_expression("sha256('a@x.io') + ':e1'").evaluate(
        cel.bind({}, NOW)
    )
    assert match.locale == "de-AT"
    [no_lang] = cat.evaluate({**event, "data": {"to": "a@x.io"}}, NOW)
    assert no_lang.locale is None


def test_idempotency_key_must_be_a_string(make_catalog: Any) -> None:
    with pytest.raises(CatalogLoadError, match="idempotency_key: CEL error: expression yields"):
        build(make_catalog, "[event.data.to]", "[email]", "    idempotency_key: '1 + 2'\n")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("bucket('user-1', 100)", 94),  # stable across processes and versions
        ("bucket('user-1', 100) == bucket('user-1', 100)", True),
        ("emailDomain('Ann@Example.COM')", "example.com"),
        ("emailDomain('nobody')", ""),
        ("isEmail('a@b.io') && !isEmail('a@b')", True),
        ("isPhone('+4915112345678') && !isPhone('015112345678')", True),
        ("sha256('a').size()", 64),
    ],
)
def test_custom_functions(source: str, expected: Any) -> None:
    assert cel.compile_expression(source).evaluate(cel.bind({}, NOW)) == expected


def test_custom_function_errors_are_rule_errors(make_catalog: Any) -> None:
    cat = build(
        make_catalog, "[event.data.to]", "[email]", "    when: bucket(event.data.to, 0) < 5\n"
    )
    with pytest.raises(RuleEvaluationError, match="bucket count must be positive"):
        run(cat, to="a@x.io")
