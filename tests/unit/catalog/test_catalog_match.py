"""Loading the example catalog and matching events against rules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from catalog import Catalog, EventError, Match, RuleEvaluationError, load_catalog

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def order_event(**data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "order_id": "A-17",
        "total": 42.5,
        "customer": {"email": "bob@example.com", "name": "Bob"},
        "items": [{"name": "Tea", "quantity": 2, "price": 21.25}],
    }
    payload.update(data)
    return {"id": "evt-1", "type": "order.created", "source": "/shop", "data": payload}


@pytest.fixture
def example(example_path: Path) -> Catalog:
    return load_catalog(example_path)


def test_example_catalog_loads(example: Catalog) -> None:
    assert [r.id for r in example.rules] == [
        "order-confirmation",
        "welcome",
        "welcome-app",
        "infra-alert-slack",
        "infra-alert-webhook",
        "order-shipped",
        "payment-completed",
        "payment-failed",
        "password-reset",
    ]
    assert example.event_patterns() == {
        "order.created",
        "order.shipped",
        "payment.completed",
        "payment.failed",
        "user.registered",
        "user.password-reset",
        "infra.alert.*",
    }
    assert len(example.version) == 12
    assert example.templates.ids == {
        "order-confirmation",
        "welcome",
        "order-shipped",
        "payment-completed",
        "payment-failed",
        "password-reset",
        "infra-alert",
    }


def test_order_created_yields_one_email(example: Catalog) -> None:
    [match] = example.evaluate(order_event(), NOW)
    assert match == Match(
        rule_id="order-confirmation",
        rule_version=1,
        recipient="bob@example.com",
        channel="email",
        template_id="order-confirmation",
        template_version=example.templates.version("order-confirmation"),
        priority="normal",
        category="transactional",
        variables={
            "order_id": "A-17",
            "name": "Bob",
            "items": [{"name": "Tea", "quantity": 2, "price": 21.25}],
            "total": 42.5,
            "currency": "EUR",
        },
        recipient_kind="email",
    )


def test_user_registered_yields_welcome(example: Catalog) -> None:
    event = {"id": "u1", "type": "user.registered", "data": {"email": "ann@example.com"}}
    [match] = example.evaluate(event, NOW)
    assert (match.rule_id, match.recipient, match.variables) == (
        "welcome",
        "ann@example.com",
        {"name": "there"},
    )
    test_account = {**event, "data": {"email": "t@example.com", "test_account": True}}
    assert example.evaluate(test_account, NOW) == []


def test_when_false_and_unknown_type_match_nothing(example: Catalog) -> None:
    assert example.evaluate(order_event(total=0), NOW) == []
    assert example.evaluate({"id": "x", "type": "invoice.paid", "data": {}}, NOW) == []
    assert example.rules_for("invoice.paid") == ()


def test_match_is_frozen(example: Catalog) -> None:
    [match] = example.evaluate(order_event(), NOW)
    with pytest.raises(ValidationError):
        match.recipient = "eve@example.com"


def test_runtime_error_names_rule_and_expression(example: Catalog) -> None:
    event = order_event()
    del event["data"]["customer"]
    with pytest.raises(RuleEvaluationError) as info:
        example.evaluate(event, NOW)
    err = info.value
    assert (err.rule_id, err.field, err.expression) == (
        "order-confirmation",
        "recipients[0]",
        "event.data.customer.email",
    )
    assert "customer" in err.cause
    assert "evt-1" in str(err) and "Fix:" in str(err)


def test_envelope_without_type_is_an_event_error(example: Catalog) -> None:
    with pytest.raises(EventError, match="not a string"):
        example.evaluate({"id": "x", "data": {}}, NOW)


RULES = """\
rules:
  - id: exact
    version: 1
    events: [order.created]
    recipients: [event.data.to, event.data.cc]
    channels: [email]
    template: welcome
    category: c
  - id: wild
    version: 2
    events: ["order.*", order.created]
    when: now > timestamp('2024-01-01T00:00:00Z') && event.subject == null
    recipients: ["'ops@example.com'"]
    channels: [email]
    template: welcome
    category: c
    priority: high
    variables:
      at: now
      age: now - timestamp('2025-01-02T03:04:00Z')
      kind: event.type
  - id: disabled
    version: 1
    enabled: false
    events: ["*"]
    recipients: ["'x@example.com'"]
    channels: [email]
    template: welcome
    category: c
"""


@pytest.fixture
def matcher(make_catalog: Any) -> Catalog:
    return load_catalog(make_catalog({"rules.yaml": RULES}))


def test_wildcards_order_and_disabled_rules(matcher: Catalog) -> None:
    assert [r.id for r in matcher.rules_for("order.created")] == ["exact", "wild"]
    assert [r.id for r in matcher.rules_for("order.shipped")] == ["wild"]
    assert matcher.rules_for("orders.created") == ()
    assert matcher.rules_for("ORDER.created") == ()  # matching is case-sensitive
    assert matcher.event_patterns() == {"order.created", "order.*"}


def test_recipients_deduped_per_rule_one_match_each(matcher: Catalog) -> None:
    event = {
        "id": "e",
        "type": "order.created",
        "data": {"to": ["a@x.io", "b@x.io", " a@x.io "], "cc": "b@x.io"},
    }
    matches = matcher.evaluate(event, NOW)
    assert [(m.rule_id, m.recipient) for m in matches] == [
        ("exact", "a@x.io"),
        ("exact", "b@x.io"),
        ("wild", "ops@example.com"),
    ]
    wild = matches[-1]
    assert (wild.rule_version, wild.priority) == (2, "high")
    assert wild.variables == {"at": "2025-01-02T03:04:05Z", "age": 5.0, "kind": "order.created"}


def test_empty_recipient_list_matches_nothing(matcher: Catalog) -> None:
    event = {"id": "e", "type": "order.created", "data": {"to": [], "cc": []}}
    assert [m.rule_id for m in matcher.evaluate(event, NOW)] == ["wild"]


@pytest.mark.parametrize(
    ("data", "field", "cause"),
    [
        ({"to": 5, "cc": []}, "recipients[0]", "not a string or a list of strings"),
        ({"to": ["a@x.io", 7], "cc": []}, "recipients[0]", "not a non-empty string"),
        ({"to": "  ", "cc": []}, "recipients[0]", "not a non-empty string"),
        ({"to": None, "cc": []}, "recipients[0]", "yields null"),
        ({"to": "a@x.io"}, "recipients[1]", "cc"),
    ],
)
def test_bad_recipients_raise(
    matcher: Catalog, data: dict[str, Any], field: str, cause: str
) -> None:
    with pytest.raises(RuleEvaluationError) as info:
        matcher.evaluate({"id": "e", "type": "order.created", "data": data}, NOW)
    assert info.value.field == field
    assert cause in info.value.cause


def test_non_bool_when_at_runtime_raises(make_catalog: Any, valid_rules: str) -> None:
    rules = valid_rules.replace("    recipients:", "    when: event.data.flag\n    recipients:")
    catalog = load_catalog(make_catalog({"rules.yaml": rules}))
    data: dict[str, Any] = {"flag": "yes", "email": "a@x.io"}
    event = {"id": "e", "type": "user.registered", "data": data}
    with pytest.raises(RuleEvaluationError, match="not a bool"):
        catalog.evaluate(event, NOW)
    data.update(flag=True, name="Ann")
    assert len(catalog.evaluate(event, NOW)) == 1


def test_non_cel_value_in_event_is_a_rule_evaluation_error(matcher: Catalog) -> None:
    event = {"id": "e", "type": "order.created", "data": {"to": ("a@x.io",), "cc": []}}
    with pytest.raises(RuleEvaluationError, match="tuple"):
        matcher.evaluate(event, NOW)


def test_resolved_rules_are_cached_per_type(matcher: Catalog) -> None:
    first = matcher.rules_for("order.paid")
    assert matcher._cache["order.paid"] is matcher._resolve("order.paid")
    assert matcher.rules_for("order.paid") == first


def test_rules_directory_and_yml_files_are_loaded(make_catalog: Any, valid_rules: str) -> None:
    second = valid_rules.replace("id: r1", "id: r2")
    third = valid_rules.replace("id: r1", "id: r3")
    root = make_catalog(
        {
            "rules.yml": valid_rules,
            "rules/b.yaml": third,
            "rules/a/x.yaml": second,
            "rules/notes.txt": "ignored",
        }
    )
    catalog = load_catalog(root)
    assert [r.id for r in catalog.rules] == ["r1", "r2", "r3"]
    # What preferences may name: computed once, shared, and immutable.
    assert catalog.rule_ids() == frozenset({"r1", "r2", "r3"})
    assert catalog.rule_ids() is catalog.rule_ids()
    assert catalog.categories() == frozenset(r.category for r in catalog.rules)
    assert isinstance(catalog.categories(), frozenset)
    assert catalog.categories() is catalog.categories()


def test_versions_follow_content(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog({"rules.yaml": valid_rules})
    first = load_catalog(root)
    assert load_catalog(root).version == first.version
    (root / "rules.yaml").write_text(valid_rules.replace("version: 1", "version: 2"))
    second = load_catalog(root)
    assert second.version != first.version
    assert second.templates.version("welcome") == first.templates.version("welcome")
    footer = root / "templates" / "_partials" / "footer.txt.j2"
    footer.write_text(footer.read_text() + "Bye.\n")
    third = load_catalog(root)
    # welcome includes the footer partial, so its version moves; nothing else changed.
    assert third.templates.version("welcome") != second.templates.version("welcome")
    assert third.version != second.version
