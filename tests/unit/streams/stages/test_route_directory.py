"""`- user:` recipients in the route decision, with a fake directory (a dict) and a fixed clock.

What a directory recipient becomes: one notification per device on push, the first channel
with an address under first-available, `suppressed` with the preference's reason or
`no-address`, critical past opt-outs, quiet hours parked on the retry topic, the rule's
`recipient_when` and recipient variables, the recipient's locale as the default.
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
from schemas.notification import Notification, notification_id
from schemas.recipient import Address, Preferences, QuietHours, Recipient
from schemas.settings import TidingsSettings
from streams.runtime.records import Out
from streams.stages.deliver_outputs import DUE_HEADER, HOLD_HEADER, hold_until_ms
from streams.stages.route_decide import route_record

EXAMPLES = Path(__file__).resolve().parents[4] / "examples/catalog"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 13:00 in Vienna


def _catalog(tmp_path: Path, **rule: Any) -> Catalog:
    cat = tmp_path / "catalog"
    shutil.copytree(EXAMPLES, cat)
    doc = {"rules": [{
        "id": "r", "version": 1, "events": ["t.e"], "recipients": [{"user": "event.data.uid"}],
        "channels": ["push", "email"], "channel_policy": "first-available",
        "template": "welcome", "category": "onboarding",
        "variables": {"name": "recipient.?attributes.first_name.orValue('there')"}, **rule,
    }]}  # fmt: skip
    (cat / "rules" / "unit.yaml").write_text(yaml.safe_dump(doc))
    return load_catalog(cat)


def _route(
    settings: TidingsSettings, catalog: Catalog, uid: str, *recipients: Recipient,
    tenants: dict[str, Any] | None = None,
) -> tuple[list[Out], str]:  # fmt: skip
    ev = {"specversion": "1.0", "id": "e1", "source": "s", "type": "t.e", "tenantid": "acme",
          "data": {"uid": uid}}  # fmt: skip
    return route_record(
        topic="t", partition=0, offset=1, timestamp_ms=1, key=None,
        value=json.dumps(ev).encode(), headers=[], catalog=catalog, settings=settings, now=NOW,
        directory={(r.tenant, r.id): r for r in recipients}, tenants=tenants or {},
    )  # fmt: skip


def _split(settings: TidingsSettings, outs: list[Out]) -> tuple[list[Notification], list[Any]]:
    sent = [Notification.decode(o.value or b"") for o in outs if o.topic != settings.topics.status]
    statuses = [
        json.loads(o.value or b"")["data"] for o in outs if o.topic == settings.topics.status
    ]
    return sent, statuses


def _user(**kw: Any) -> Recipient:
    return Recipient(tenant="acme", id="u1", **kw)


def test_push_goes_to_every_device_with_an_id_per_device(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    cat = _catalog(tmp_path)
    u = _user(email="u1@x.io", attributes={"first_name": "Ada"}, addresses=(
        Address(channel="push", address="t1", platform="fcm"),
        Address(channel="push", address="t2", platform="apns"),
    ))  # fmt: skip
    outs, outcome = _route(settings, cat, "u1", u)
    sent, statuses = _split(settings, outs)
    assert outcome == "routed"
    assert [(n.channel, n.recipient, n.user) for n in sent] == [
        ("push", "t1", "u1"), ("push", "t2", "u1")]  # fmt: skip
    assert [n.id for n in sent] == [notification_id("s", "e1", "r", f"u1\x1f{t}", "push")
                                    for t in ("t1", "t2")]  # fmt: skip
    assert sent[0].variables["name"] == "Ada", "a variable reading `recipient`"
    assert [(s["status"], s["recipient_id"]) for s in statuses] == [("queued", "u1")] * 2
    assert all(o.key == b"u1" for o in outs if o.topic != settings.topics.status)


def test_first_available_falls_through_to_the_first_channel_with_an_address(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    outs, _ = _route(settings, _catalog(tmp_path), "u1", _user(email="u1@x.io", locale="de-AT"))
    [n], _ = _split(settings, outs)
    assert (n.channel, n.recipient, n.locale) == ("email", "u1@x.io", "de-AT")
    assert n.id == notification_id("s", "e1", "r", "u1", "email")


@pytest.mark.parametrize(
    ("recipient", "reason"),
    [
        (None, "no-address"),
        (_user(), "no-address"),
        (_user(email="u1@x.io", preferences=Preferences(categories=("onboarding",))),
         "opt-out:category:onboarding"),
    ],
)  # fmt: skip
def test_nothing_to_send_is_a_suppressed_status_with_its_reason(
    settings: TidingsSettings, tmp_path: Path, recipient: Recipient | None, reason: str
) -> None:
    found = (recipient,) if recipient is not None else ()
    outs, outcome = _route(settings, _catalog(tmp_path), "u1", *found)
    sent, statuses = _split(settings, outs)
    assert outcome == "routed" and sent == []
    assert [(s["status"], s["reason"], s["recipient_id"]) for s in statuses] == [
        ("suppressed", reason, "u1")]  # fmt: skip


def test_a_critical_rule_goes_past_an_opt_out_and_says_so(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    u = _user(email="u1@x.io", preferences=Preferences(categories=("onboarding",)))
    outs, _ = _route(settings, _catalog(tmp_path, priority="critical"), "u1", u)
    [n], [st] = _split(settings, outs)
    assert n.channel == "email"
    assert (st["status"], st["bypassed"]) == ("queued", "critical")


def test_quiet_hours_park_the_notification_until_the_window_ends(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    quiet = Preferences(quiet_hours=QuietHours(start="12:30", end="13:30"))
    u = _user(email="u1@x.io", timezone="Europe/Vienna", preferences=quiet)
    outs, _ = _route(settings, _catalog(tmp_path), "u1", u)
    [parked] = [o for o in outs if o.topic != settings.topics.status]
    tier = max(settings.runtime.retry_tiers_s)
    assert parked.topic == f"{settings.topics.retry_prefix}{tier:g}s"
    end_ms = int(datetime(2026, 12, 1, 12, 30, tzinfo=UTC).timestamp() * 1000)  # 13:30 Vienna
    headers = list(parked.headers)
    assert hold_until_ms(headers) == end_ms
    due = int(dict(headers)[DUE_HEADER] or b"0")
    assert due == min(end_ms, int(NOW.timestamp() * 1000 + tier * 1000))
    assert dict(headers)[HOLD_HEADER] == str(end_ms).encode()


def test_recipient_when_excludes_a_recipient_without_any_status(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    cat = _catalog(tmp_path, recipient_when="recipient.?attributes.plan.orValue('') != 'internal'")
    outs, outcome = _route(
        settings, cat, "u1", _user(email="a@b.io", attributes={"plan": "internal"})
    )
    assert (outs, outcome) == ([], "unmatched")


def test_a_rule_reads_presence_as_recipient_online(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    # The rule's point: push only to someone not in the app right now; the variable shows
    # a recipient variable sees it too.
    cat = _catalog(tmp_path, recipient_when="!recipient.online",
                   variables={"name": "recipient.online ? 'in app' : 'away'"})  # fmt: skip
    assert cat.reads_presence
    assert not _catalog(tmp_path / "plain").reads_presence, "no lookup for a catalog without"
    u = _user(email="u1@x.io", addresses=(Address(channel="push", address="t1", platform="fcm"),))
    ev = {"specversion": "1.0", "id": "e1", "source": "s", "type": "t.e", "tenantid": "acme",
          "data": {"uid": "u1"}}  # fmt: skip

    def route(online: set[tuple[str, str]]) -> tuple[list[Out], str]:
        return route_record(
            topic="t", partition=0, offset=1, timestamp_ms=1, key=None,
            value=json.dumps(ev).encode(), headers=[], catalog=cat, settings=settings, now=NOW,
            directory={("acme", "u1"): u}, tenants={}, online=online,
        )  # fmt: skip

    assert route({("acme", "u1")}) == ([], "unmatched")
    assert route({("other", "u1")}) != ([], "unmatched"), "presence is per tenant"
    [n], _ = _split(settings, route(set())[0])
    assert (n.channel, n.recipient, n.variables["name"]) == ("push", "t1", "away")


def test_in_app_reaches_an_unknown_recipient_by_its_id(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    cat = _catalog(tmp_path, channels=["inapp"], channel_policy="all", template="payment-completed")
    outs, _ = _route(settings, cat, "u9")
    [n], [st] = _split(settings, outs)
    assert (n.channel, n.recipient, n.user, st["status"]) == ("inapp", "u9", "u9", "queued")


def test_a_cap_counts_a_notification_once_whatever_its_devices(
    settings: TidingsSettings, tmp_path: Path
) -> None:
    from streams.stages.route_caps import capped_group

    cat = _catalog(tmp_path, channels=["push", "email"], channel_policy="all")
    u = _user(email="u1@x.io", addresses=(
        Address(channel="push", address="t1", platform="fcm"),
        Address(channel="push", address="t2", platform="apns"),
    ))  # fmt: skip
    sent, _ = _split(settings, _route(settings, cat, "u1", u)[0])
    groups: dict[str, set[str]] = {}
    for n in sent:
        groups.setdefault(n.channel, set()).add(capped_group(n))
    # Both devices share one group; email's is its own id. Both are the id the notification
    # would have without a device: what Redis remembers stays the same across versions.
    assert groups == {
        "push": {notification_id("s", "e1", "r", "u1", "push")},
        "email": {notification_id("s", "e1", "r", "u1", "email")},
    }
