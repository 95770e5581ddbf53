"""Deliver's re-check of a recipient changed after route: a pure decision per notification."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.notification import Notification
from schemas.recipient import Address, Preferences, QuietHours, Recipient
from streams.stages.deliver_recheck import ADDRESS_CHANGED, recheck
from tests.unit.processors.fakes import notification

NOW = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)


def _n(channel: str = "email", recipient: str = "a@example.com", **kw: object) -> Notification:
    return notification(channel=channel, recipient=recipient, user="u-1", tenant="acme",
                        category="news", rule_id="digest", **kw)  # fmt: skip


def test_an_erased_recipient_is_suppressed_except_in_app() -> None:
    d = recheck(_n(), None, None, (), NOW)
    assert (d.outcome, d.reason) == ("suppress", "no-address")
    assert recheck(_n("inapp", "u-1"), None, None, (), NOW).outcome == "send"


def test_an_address_no_longer_the_recipients_is_suppressed() -> None:
    moved = Recipient(tenant="acme", id="u-1", email="new@example.com")
    d = recheck(_n(), moved, None, (), NOW)
    assert (d.outcome, d.reason) == ("suppress", ADDRESS_CHANGED)
    one = Recipient(tenant="acme", id="u-1",
                    addresses=(Address(channel="push", address="tok-b"),))  # fmt: skip
    assert recheck(_n("push", "tok-a"), one, None, (), NOW).reason == ADDRESS_CHANGED
    assert recheck(_n("push", "tok-b"), one, None, (), NOW).outcome == "send"


def test_a_new_opt_out_suppresses_and_critical_goes_past_it() -> None:
    r = Recipient(tenant="acme", id="u-1", email="a@example.com",
                  preferences=Preferences(categories=("news",)))  # fmt: skip
    d = recheck(_n(), r, None, (), NOW)
    assert (d.outcome, d.reason) == ("suppress", "opt-out:category:news")
    assert recheck(_n(priority="critical"), r, None, (), NOW).outcome == "send"
    assert recheck(_n(), r, None, ("news",), NOW).bypassed == "required-category:news"


def test_tenant_defaults_count_and_new_quiet_hours_hold() -> None:
    r = Recipient(tenant="acme", id="u-1", email="a@example.com", timezone="UTC")
    d = recheck(_n(), r, Preferences(channels=("email",)), (), NOW)
    assert d.reason == "opt-out:channel:email"
    quiet = r.model_copy(update={"preferences": Preferences(
        quiet_hours=QuietHours(start="22:00", end="07:00"))})  # fmt: skip
    d = recheck(_n(), quiet, None, (), NOW)
    assert d.outcome == "hold" and d.hold_until == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    assert recheck(_n(), r, None, (), NOW).outcome == "send"
