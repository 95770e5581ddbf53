"""Triggers (`tidings.notify` events) in the route decision, with a fake directory (a dict).

The trigger names one rule: its recipients (or the rule's own), its data as `event.data`;
the rule's `when`, tenants and channels still apply. What can't be a trigger is dead-lettered
`invalid_trigger` with the field or the rule named.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalog import Catalog, load_catalog
from schemas import codes
from schemas.notification import Notification
from schemas.recipient import Address, Recipient
from schemas.settings import TidingsSettings
from schemas.trigger import NOTIFY_TYPE, trigger_event_id
from streams.runtime.records import Out
from streams.stages.route_decide import route_record

EXAMPLES = Path(__file__).resolve().parents[4] / "examples/catalog"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = tmp_path / "catalog"
    shutil.copytree(EXAMPLES, cat)
    doc = {"rules": [
        {"id": "vip-only", "version": 1, "events": ["t.e"], "recipients": ["event.data.email"],
         "channels": ["email"], "template": "welcome", "category": "onboarding",
         "tenants": ["vip"]},
        {"id": "to-user", "version": 1, "events": ["t.e"],
         "recipients": [{"user": "event.data.uid"}], "channels": ["push", "email"],
         "channel_policy": "first-available",
         "template": "welcome", "category": "onboarding",
         "variables": {"name": "event.data.?name.orValue('there')"}},
    ]}  # fmt: skip
    (cat / "rules" / "unit.yaml").write_text(yaml.safe_dump(doc))
    return load_catalog(cat)


def _route(
    settings: TidingsSettings, catalog: Catalog, data: Any, *, tenant: str = "acme",
    directory: tuple[Recipient, ...] = (), eid: str = "ntf_1",
) -> tuple[list[Out], str]:  # fmt: skip
    ev = {"specversion": "1.0", "id": eid, "source": "tidings:gateway/notify",
          "type": NOTIFY_TYPE, "tenantid": tenant, "data": data}  # fmt: skip
    return route_record(
        topic=settings.topics.notify, partition=0, offset=7, timestamp_ms=1, key=None,
        value=json.dumps(ev).encode(), headers=[], catalog=catalog, settings=settings, now=NOW,
        directory={(r.tenant, r.id): r for r in directory}, tenants={},
    )  # fmt: skip


def _sent(settings: TidingsSettings, outs: list[Out]) -> list[Notification]:
    return [
        Notification.decode(o.value or b"")
        for o in outs
        if o.topic.startswith(settings.topics.dispatch_prefix)
    ]


def _dead(outs: list[Out]) -> tuple[str, str]:
    (out,) = outs
    h = dict(out.headers)
    reason, error = h["tidings-dlq-reason"] or b"", h["kafka_dlt-exception-message"] or b""
    return reason.decode(), error.decode()


def test_a_trigger_runs_the_named_rule_for_its_recipients_with_its_data(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    data = {"rule": "welcome", "recipients": ["ann@x.test", " bob@x.test ", "ann@x.test"],
            "data": {"name": "Ann"}}  # fmt: skip
    outs, outcome = _route(settings, catalog, data)
    assert outcome == "routed"
    sent = _sent(settings, outs)
    assert sorted(n.recipient for n in sent) == ["ann@x.test", "bob@x.test"]  # deduplicated
    assert {(n.rule_id, n.channel, n.variables["name"]) for n in sent} == {
        ("welcome", "email", "Ann")
    }
    # The same trigger again is the same notifications: ids derive from the event.
    again = _sent(settings, _route(settings, catalog, data)[0])
    assert {n.id for n in again} == {n.id for n in sent}
    other = _sent(settings, _route(settings, catalog, data, eid="ntf_2")[0])
    assert not {n.id for n in other} & {n.id for n in sent}


def test_without_recipients_the_rules_own_are_evaluated_over_the_data(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    outs, outcome = _route(settings, catalog, {"rule": "welcome", "data": {"email": "c@x.test"}})
    assert outcome == "routed"
    assert [n.recipient for n in _sent(settings, outs)] == ["c@x.test"]


def test_the_rules_when_still_applies(settings: TidingsSettings, catalog: Catalog) -> None:
    data = {"rule": "welcome", "recipients": ["a@x.test"], "data": {"test_account": True}}
    assert _route(settings, catalog, data) == ([], "unmatched")


def test_a_recipient_id_is_a_directory_recipient(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    device = Address(channel="push", address="tok-1", platform="fcm")
    u1 = Recipient(tenant="acme", id="u1", email="u1@x.test", addresses=(device,))
    u2 = Recipient(tenant="acme", id="u2", email="u2@x.test")
    data = {"rule": "to-user", "recipients": ["u1", "u2", "d@x.test"], "data": {"name": "D"}}
    outs, outcome = _route(settings, catalog, data, directory=(u1, u2))
    assert outcome == "routed"
    got = {(n.channel, n.recipient) for n in _sent(settings, outs)}
    # first-available: u1's device, u2's email (no device); an address goes as it is.
    assert got == {("push", "tok-1"), ("email", "u2@x.test"), ("email", "d@x.test")}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"rule": "nope", "recipients": ["a@x.test"]}, "has no such rule"),
        ({"rule": "welcome", "recipients": "a@x.test"}, "data.recipients"),
        ({"rule": "welcome", "recipient": ["a@x.test"]}, "data.recipient"),
        ({"recipients": ["a@x.test"]}, "exactly one of `rule`"),
        ({"rule": "welcome", "template": "welcome"}, "exactly one of `rule`"),
        ({"rule": "welcome", "channels": ["email"]}, "apply to a template trigger only"),
        (
            {"template": "welcome", "channels": ["email"], "recipients": ["a@x.test"]},
            "needs category",
        ),
        (
            {
                "template": "welcome",
                "category": "c",
                "channels": ["email", "email"],
                "recipients": ["a@x.test"],
            },
            "lists a channel twice",
        ),
        (
            {
                "template": "welcome",
                "category": "c",
                "channels": ["fax"],
                "recipients": ["a@x.test"],
            },
            "data.channels.0",
        ),
        (
            {
                "template": "nope",
                "category": "onboarding",
                "channels": ["email"],
                "recipients": ["a@x.test"],
            },
            "template: the trigger names template 'nope'",
        ),
        (
            {
                "template": "welcome",
                "category": "c",
                "channels": ["email"],
                "recipients": ["a@x.test"],
            },
            "category: category 'c' is no category",
        ),
        (
            {
                "template": "welcome",
                "category": "onboarding",
                "channels": ["sms"],
                "recipients": ["a@x.test"],
            },
            "channels: template 'welcome' has no variant for",
        ),
        ({"rule": "welcome", "recipients": [""]}, "data.recipients.0"),
        ("welcome", "not a trigger: data: Input should be a valid dictionary"),
        ({"rule": "vip-only", "recipients": ["a@x.test"]}, "not for tenant 'acme'"),
    ],
)
def test_what_cant_be_a_trigger_is_dead_lettered_naming_why(
    settings: TidingsSettings, catalog: Catalog, data: Any, says: str
) -> None:
    outs, outcome = _route(settings, catalog, data)
    assert outcome == "dlq"
    reason, error = _dead(outs)
    assert reason == codes.INVALID_TRIGGER
    assert says in error
    assert f"{settings.topics.notify}/0/7" in error, "names topic/partition/offset"


def _template(**over: Any) -> dict[str, Any]:
    return {"template": "welcome", "channels": ["push", "email"], "category": "onboarding",
            "recipients": ["u1", "u2", "d@x.test"], "data": {"name": "Dee"}, **over}  # fmt: skip


def test_a_template_trigger_sends_the_template_with_its_data_as_variables(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    device = Address(channel="push", address="tok-1", platform="fcm")
    u1 = Recipient(tenant="acme", id="u1", email="u1@x.test", addresses=(device,), locale="de")
    u2 = Recipient(tenant="acme", id="u2", email="u2@x.test")
    outs, outcome = _route(settings, catalog, _template(priority="high"), directory=(u1, u2))
    assert outcome == "routed"
    sent = _sent(settings, outs)
    # channel_policy `all` (the default): every channel that reaches each recipient.
    assert {(n.channel, n.recipient) for n in sent} == {
        ("push", "tok-1"), ("email", "u1@x.test"), ("email", "u2@x.test"), ("email", "d@x.test")
    }  # fmt: skip
    assert {(n.rule_id, n.template_id, n.category, n.priority) for n in sent} == {
        ("template:welcome", "welcome", "onboarding", "high")
    }
    assert all(n.variables == {"name": "Dee"} for n in sent)
    # The directory recipient's locale is its notifications' default, as for a rule.
    assert {n.locale for n in sent if n.user == "u1"} == {"de"}
    again = _sent(settings, _route(settings, catalog, _template(priority="high"),
                                   directory=(u1, u2))[0])  # fmt: skip
    assert {n.id for n in again} == {n.id for n in sent}


def test_a_template_trigger_honours_the_policy_locale_and_preferences(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    device = Address(channel="push", address="tok-1", platform="fcm")
    u1 = Recipient(tenant="acme", id="u1", email="u1@x.test", addresses=(device,))
    u2 = Recipient(tenant="acme", id="u2", email="u2@x.test",
                   preferences={"categories": ["onboarding"]})  # fmt: skip
    data = _template(channel_policy="first-available", locale="de", recipients=["u1", "u2"])
    outs, outcome = _route(settings, catalog, data, directory=(u1, u2))
    assert outcome == "routed"
    sent = _sent(settings, outs)
    assert [(n.channel, n.recipient, n.locale) for n in sent] == [("push", "tok-1", "de")]
    suppressed = [json.loads(o.value or b"") for o in outs if o.topic == settings.topics.status]
    assert [(e["data"]["status"], e["data"]["reason"]) for e in suppressed
            if e["data"]["status"] == "suppressed"] == [
        ("suppressed", "opt-out:category:onboarding")
    ]  # fmt: skip


def test_a_recipient_no_channel_reaches_is_a_rule_error(
    settings: TidingsSettings, catalog: Catalog
) -> None:
    outs, outcome = _route(settings, catalog, {"rule": "welcome", "recipients": ["+4312345678"]})
    assert outcome == "dlq"
    reason, error = _dead(outs)
    assert reason == codes.RULE_ERROR
    assert "none of the channels ['email']" in error


def test_a_trigger_id_derives_from_the_tenant_and_the_key() -> None:
    assert trigger_event_id("acme", "k1") == trigger_event_id("acme", "k1")
    assert trigger_event_id("acme", "k1") != trigger_event_id("other", "k1")
    assert trigger_event_id("acme", "k1") != trigger_event_id("acme", "k2")
    assert trigger_event_id("acme", None) != trigger_event_id("acme", None)
