"""`- user:` recipients resolved by the recipient directory, end to end on the real stack.

Real Kafka, Postgres (the directory's tables) and the local FCM HTTP v1 peer:

- a user with two devices gets two pushes, one per token; the peer answers UNREGISTERED for
  one, the directory drops that address, and the next event makes one push;
- a user unknown to the directory, or with no address on the rule's channels, yields a
  `suppressed` status with reason `no-address`: no send, no dead letter;
- an opt-out of the rule's category suppresses with its reason and sends nothing, and a
  critical rule goes past it (the status says so);
- quiet hours hold a push until the window ends, then it is sent.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis
import yaml

from schemas.notification import notification_id
from schemas.recipient import Address, Preferences, QuietHours, Recipient
from schemas.settings import TidingsSettings
from streams.state.directory import Directory
from streams.state.presence import presence_key
from tests.integration.pipeline import World, wait_until
from tests.integration.tcp_proxy import StoppableProxy
from tests.peers.fcm import FcmPeer, make_key

LOCAL_HTTP: dict[str, Any] = {"allow": ["127.0.0.1/32"], "allow_http": True}
FCM_EMAIL = "tidings@demo-project.iam.gserviceaccount.com"


def _fcm_config(tmp: Path, fcm: FcmPeer, private_pem: str) -> dict[str, Any]:
    key_file = tmp / "service-account.json"
    key_file.write_text(json.dumps({
        "type": "service_account", "project_id": "demo-project", "private_key_id": "kid-1",
        "private_key": private_pem, "client_email": FCM_EMAIL, "token_uri": fcm.token_uri,
    }))  # fmt: skip
    return {"push": [{"kind": "fcm", "name": "fcm", "service_account_file": str(key_file),
                      "base_url": fcm.url, "http": LOCAL_HTTP}]}  # fmt: skip


def _add_rule(w: World, rule: dict[str, Any]) -> None:
    """Add a rule to this world's catalog copy (before its pipeline starts)."""
    path = w.settings.catalog.path / "rules" / f"{rule['id']}.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule]}, sort_keys=False))


def _rule(w: World, rid: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": rid, "version": 1, "events": [f"test.{w.unique}.{rid}"],
        "recipients": [{"user": "event.data.user_id"}], "channels": ["push", "email"],
        "channel_policy": "first-available", "template": "welcome", "category": "onboarding",
        "variables": {"name": "recipient.?attributes.first_name.orValue('there')"}, **kw,
    }  # fmt: skip


def _statuses(w: World) -> list[dict[str, Any]]:
    """The data of every status event."""
    return [ev["data"] for ev in w.status_events(idle_s=2.0)]


def test_each_device_gets_a_push_and_a_dead_token_is_dropped_from_the_directory(
    make_world_with: Callable[..., World], tmp_path: Path
) -> None:
    private, public = make_key()
    fcm = FcmPeer(public, FCM_EMAIL)
    with fcm:
        w = make_world_with(extra=lambda _: {"channels": _fcm_config(tmp_path, fcm, private)})
        _add_rule(w, _rule(w, "devices"))
        user, t1, t2 = f"u-{w.unique}", f"tok-a-{w.unique}", f"tok-b-{w.unique}"
        w.import_recipients(Recipient(tenant="acme", id=user, email=f"{user}@example.com",
                                      attributes={"first_name": "Ada"}, addresses=(
            Address(channel="push", address=t1, platform="fcm"),
            Address(channel="push", address=t2, platform="fcm"),
        )))  # fmt: skip
        fcm.dead_tokens.add(t2)
        with w.pipeline():
            first = w.send_to_user("devices", user, 1)
            wait_until(lambda: len(fcm.requests) >= 3, 60, "two sends (and a token request)")
            ids = {t: notification_id(first["source"], first["id"], "devices",
                                      f"{user}\x1f{t}", "push") for t in (t1, t2)}  # fmt: skip

            def failed_dead() -> bool:
                return any(s["status"] == "failed" and s["notification_id"] == ids[t2]
                           for s in _statuses(w))  # fmt: skip

            wait_until(failed_dead, 60, "the dead token's failed status")
            d = Directory(w.settings.postgres.conninfo())
            try:
                left = d.lookup([("acme", user)])[("acme", user)].addresses
            finally:
                d.close()
            assert [a.address for a in left] == [t1], "the dead token left the directory"
            w.send_to_user("devices", user, 2)
            wait_until(lambda: len(fcm.messages) >= 2, 60, "the second event's push")
            time.sleep(2.0)
    assert [m["token"] for m in fcm.messages] == [t1, t1]
    assert fcm.messages[0]["notification"]["title"] == "Welcome, Ada!"
    sent = {s["notification_id"]: s for s in _statuses(w) if s["status"] == "sent"}
    assert sent[ids[t1]]["recipient_id"] == user, "statuses name the user, not the token"
    assert w.mail() == {}, "push reached the user: first-available made no email"


def test_no_address_and_opt_outs_are_suppressed_and_critical_goes_past_them(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with()
    _add_rule(w, _rule(w, "tips", channels=["email"], channel_policy="all"))
    _add_rule(w, _rule(w, "alert", channels=["email"], channel_policy="all", priority="critical"))
    out_user, ghost, nomail = f"out-{w.unique}", f"ghost-{w.unique}", f"nomail-{w.unique}"
    w.import_recipients(
        Recipient(tenant="acme", id=out_user, email=f"{out_user}@example.com",
                  preferences=Preferences(categories=("onboarding",))),
        Recipient(tenant="acme", id=nomail),
    )  # fmt: skip
    with w.pipeline():
        sends = [("tips", out_user), ("tips", ghost), ("tips", nomail), ("alert", out_user)]
        docs = [w.send_to_user(rule, user, i) for i, (rule, user) in enumerate(sends, 1)]
        assert sum(w.wait_mail(1).values()) == 1
        time.sleep(3.0)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for s in _statuses(w):
        by_event.setdefault(s["source_event_id"], []).append(s)
    reasons = {d["id"]: [(s["status"], s.get("reason")) for s in by_event[d["id"]]] for d in docs}
    assert reasons[docs[0]["id"]] == [("suppressed", "opt-out:category:onboarding")]
    assert reasons[docs[1]["id"]] == [("suppressed", "no-address")]
    assert reasons[docs[2]["id"]] == [("suppressed", "no-address")]
    alert = by_event[docs[3]["id"]]
    assert [s["status"] for s in alert] == ["queued", "sent"]
    assert alert[0].get("bypassed") == "critical"
    assert sum(w.mail().values()) == 1, "only the critical one was mailed"
    assert w.read(w.settings.topics.dlq, idle_s=1.0) == [], "suppressions are no dead letters"


def test_a_rule_skips_a_recipient_online_in_the_app(make_world_with: Callable[..., World]) -> None:
    # Presence as the gateway writes it (streams/http/gateway/realtime.py), in real Redis.
    w = make_world_with()
    _add_rule(w, _rule(w, "away", channels=["email"], channel_policy="all",
                       recipient_when="!recipient.online"))  # fmt: skip
    here, away = f"here-{w.unique}", f"away-{w.unique}"
    w.import_recipients(*(Recipient(tenant="acme", id=u, email=f"{u}@example.com")
                          for u in (here, away)))  # fmt: skip
    r = redis.Redis.from_url(w.settings.redis.url.get_secret_value())
    r.set(presence_key("acme", here), "1", ex=120)
    try:
        with w.pipeline():
            docs = [w.send_to_user("away", u, i) for i, u in enumerate((here, away), 1)]
            assert sum(w.wait_mail(1).values()) == 1
            time.sleep(3.0)
    finally:
        r.delete(presence_key("acme", here))
    mailed = {s["source_event_id"] for s in _statuses(w) if s["status"] == "sent"}
    assert mailed == {docs[1]["id"]}, "only the recipient away from the app was mailed"
    assert sum(w.mail().values()) == 1


def test_quiet_hours_hold_a_push_until_the_window_ends(
    make_world_with: Callable[..., World], tmp_path: Path
) -> None:
    private, public = make_key()
    fcm = FcmPeer(public, FCM_EMAIL)
    # A window from this minute to the next, in the recipient's own timezone.
    tz = ZoneInfo("Asia/Tokyo")
    now = datetime.now(UTC).astimezone(tz)
    if now.second > 50:  # too close to the minute's end to see the hold at all
        time.sleep(61 - now.second)
        now = datetime.now(UTC).astimezone(tz)
    end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    window = QuietHours(start=now.strftime("%H:%M"), end=end.strftime("%H:%M"))
    with fcm:
        w = make_world_with(extra=lambda _: {
            "channels": _fcm_config(tmp_path, fcm, private),
            "runtime": {"claim_lease_s": 3.0, "drain_timeout_s": 15.0, "retry_backoff_s": 0.05,
                        "retry_tiers_s": [1.0, 120.0]},
        })  # fmt: skip
        _add_rule(w, _rule(w, "quiet"))
        user, token = f"q-{w.unique}", f"tok-q-{w.unique}"
        w.import_recipients(Recipient(tenant="acme", id=user, timezone="Asia/Tokyo",
                                      preferences=Preferences(quiet_hours=window),
                                      addresses=(Address(channel="push", address=token,
                                                         platform="fcm"),)))  # fmt: skip
        with w.pipeline():
            w.send_to_user("quiet", user, 1)
            time.sleep(3.0)
            assert fcm.messages == [], "held: the window is not over"
            wait_until(lambda: len(fcm.messages) == 1, 90, "the push after the window")
            arrived = datetime.now(UTC)
    assert arrived >= end.astimezone(UTC), "not before the window's end"
    assert [m["token"] for m in fcm.messages] == [token]


def test_a_cap_suppresses_the_fourth_and_a_budget_spans_two_rules(
    make_world_with: Callable[..., World],
) -> None:
    """3 `tips` emails an hour per recipient (suppress; rule `a`); a budget of 4 a day across
    every rule (defer): the 4th `a` event is suppressed by its cap, and a `b` event after
    the budget is spent is parked (deferred), not sent."""
    w = make_world_with(extra=lambda _: {
        "observe": {"port": 0},
        "route": {"caps": [
            {"scope": "recipient_channel", "channels": ["email"], "categories": ["tips"],
             "limit": 3, "window": "1h", "behaviour": "suppress"},
            {"scope": "recipient", "limit": 4, "window": "1d", "behaviour": "defer"},
        ]},
    })  # fmt: skip
    _add_rule(w, _rule(w, "capa", channels=["email"], channel_policy="all", category="tips"))
    _add_rule(w, _rule(w, "capb"))  # push, else email: this user has no device
    user = f"cap-{w.unique}"
    w.import_recipients(Recipient(tenant="acme", id=user, email=f"{user}@example.com"))
    with w.pipeline():
        docs = [w.send_to_user("capa", user, i) for i in range(4)]
        assert sum(w.wait_mail(3).values()) == 3
        extra = [w.send_to_user("capb", user, 10), w.send_to_user("capb", user, 11)]
        time.sleep(4.0)
    by_event: dict[str, list[str]] = {}
    for s in _statuses(w):
        by_event.setdefault(s["source_event_id"], []).append(f"{s['status']}:{s.get('reason')}")
    assert [by_event[d["id"]] for d in docs[:3]] == [["queued:None", "sent:None"]] * 3
    assert by_event[docs[3]["id"]] == ["suppressed:cap:recipient_channel:email:3/3600s"]
    # b's first event is the budget's 4th (the suppressed `a` was not counted): sent; the
    # second is over the budget: deferred (queued, parked on the retry topic), not sent.
    assert by_event[extra[0]["id"]] == ["queued:None", "sent:None"]
    assert by_event[extra[1]["id"]] == ["queued:None"]
    assert sum(w.mail().values()) == 4
    tier = max(w.settings.runtime.retry_tiers_s)
    parked = w.read(f"{w.settings.topics.retry_prefix}{tier:g}s", idle_s=1.0)
    assert len(parked) == 1 and dict(parked[0].headers() or [])["tidings-hold-until-ms"]


def test_route_rides_out_postgres_away_during_its_directory_lookups(
    make_world_with: Callable[..., World], settings: TidingsSettings
) -> None:
    """The lookups run on route's directory thread: an outage there holds the batch (no
    output, nothing committed) and the batch is routed once Postgres is back, exactly once."""
    proxy = StoppableProxy(settings.postgres.host, settings.postgres.port)
    proxy.up()
    try:
        w = make_world_with(extra=lambda _: {
            "postgres": {"host": "127.0.0.1", "port": proxy.port},
            "runtime": {"outage_limit_s": 120.0},
        })  # fmt: skip
        _add_rule(w, _rule(w, "ride", channels=["email"], channel_policy="all"))
        users = [f"r{i}-{w.unique}" for i in range(6)]
        w.import_recipients(
            *(Recipient(tenant="acme", id=u, email=f"{u}@example.com") for u in users)
        )

        def queued() -> Counter[str]:
            return Counter(s["notification_id"] for s in _statuses(w) if s["status"] == "queued")

        with w.pipeline(("route",)):
            first = [w.send_to_user("ride", u, 1) for u in users[:3]]
            wait_until(lambda: len(queued()) == 3, 60, "three routed")
            proxy.down()
            later = [w.send_to_user("ride", u, 2) for u in users]
            time.sleep(3.0)
            assert len(queued()) == 3, "nothing routed while the directory is away"
            proxy.up()
            wait_until(lambda: len(queued()) == 9, 90, "the held batch routed")
            time.sleep(2.0)
    finally:
        proxy.down()
    got = queued()
    want = {notification_id(d["source"], d["id"], "ride", d["data"]["user_id"], "email")
            for d in first + later}  # fmt: skip
    assert set(got) == want and set(got.values()) == {1}, got
