"""The pure half of one-click unsubscribe: the preference change and the status event."""

from __future__ import annotations

from processors.channels.email import UnsubscribeToken
from schemas.recipient import OptIn, Preferences, Recipient
from streams.http.unsubscribe import opted_out, unsubscribe_change, unsubscribed_event
from streams.stages.recipients import decode_change
from tests.unit.processors.fakes import notification

CAT = UnsubscribeToken("acme", "u-1", "n-1", "marketing", "promo", 0)
RULE = UnsubscribeToken("acme", "u-1", "n-1", None, "promo", 0)


def test_the_category_is_added_and_an_opt_in_of_it_lifted() -> None:
    prefs = Preferences(channels=("sms",), opt_in=OptIn(categories=("marketing", "news")))
    got = opted_out(prefs, CAT)
    assert got is not None
    assert got.categories == ("marketing",) and got.channels == ("sms",)
    assert got.opt_in.categories == ("news",)
    assert opted_out(got, CAT) is None, "already opted out: nothing to change"


def test_without_a_category_the_rule_is_added() -> None:
    got = opted_out(Preferences(rules=("other",)), RULE)
    assert got is not None and got.rules == ("other", "promo")


def test_the_change_is_a_whole_upsert_the_stage_accepts() -> None:
    r = Recipient(tenant="acme", id="u-1", email="a@example.com", attributes={"plan": "pro"})
    prefs = opted_out(r.preferences, CAT)
    assert prefs is not None
    change = unsubscribe_change(r, prefs, CAT)
    assert change.type == "tidings.recipient.upserted" and change.source == "tidings/callbacks"
    decoded = decode_change(r.key(), change.model_dump_json().encode())
    assert decoded is not None
    assert decoded.recipient() == r.model_copy(update={"preferences": prefs})
    assert unsubscribe_change(r, prefs, CAT).id == change.id, "a retry is the same record"


def test_the_status_names_the_opt_out() -> None:
    n = notification(channel="email", recipient="a@example.com", user="u-1", tenant="acme")
    ev = unsubscribed_event(n, CAT)
    assert ev.type == "notification.unsubscribed" and ev.source == "tidings/callbacks"
    assert ev.data.status == "unsubscribed" and ev.data.reason == "opt-out:category:marketing"
    assert ev.data.recipient_id == "u-1"
    assert unsubscribed_event(n, CAT).id == ev.id
