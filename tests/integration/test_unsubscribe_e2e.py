"""Preference changes after route, end to end on the real stack (Kafka, Postgres, Redis, SMTP).

- One-click unsubscribe (RFC 8058): the List-Unsubscribe URL of a real .eml from the SMTP
  sink is POSTed to the callbacks stage; the opt-out goes through the recipients topic into
  the directory, an `unsubscribed` status is produced, and the next event of that category
  sends nothing. A GET changes nothing; a forged token is refused.
- Deliver re-checks a notification routed before its recipient changed: an opt-out made
  after route suppresses it in deliver, and so does an email address changed meanwhile.
"""

from __future__ import annotations

import email
import email.policy
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from schemas.notification import notification_id
from schemas.recipient import Preferences, Recipient
from streams.state.directory import Directory
from tests.integration.pipeline import World, wait_until
from tests.peers.npm import free_port

SECRET = "unsubscribe-secret-for-tests-0123456789"


def _add_rule(w: World, rid: str, category: str) -> None:
    rule = {
        "id": rid, "version": 1, "events": [f"test.{w.unique}.{rid}"],
        "recipients": [{"user": "event.data.user_id"}], "channels": ["email"],
        "template": "welcome", "category": category, "variables": {"name": "'there'"},
    }  # fmt: skip
    path = w.settings.catalog.path / "rules" / f"{rid}.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule]}, sort_keys=False))


def _nid(doc: dict[str, Any], rid: str, user: str) -> str:
    return notification_id(doc["source"], doc["id"], rid, user, "email")


def _statuses(w: World) -> list[dict[str, Any]]:
    return w.status_events(idle_s=1.0)


def _stored(w: World, user: str) -> Recipient | None:
    d = Directory(w.settings.postgres.conninfo())
    try:
        return d.lookup([("acme", user)]).get(("acme", user))
    finally:
        d.close()


def _post(url: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_one_click_unsubscribe_from_a_real_mail_stops_the_category(
    make_world_with: Callable[..., World],
) -> None:
    port = free_port()

    def extra(_: int) -> dict[str, Any]:
        # The world's unique id is known only once it exists: the recipients topic and group
        # come from the test's own uuid instead.
        return {"callbacks": {"host": "127.0.0.1", "port": port,
                              "unsubscribe_secrets": [SECRET]},
                "topics": {"recipients": f"test.unsub-{port}.recipients"},
                "groups": {"recipients": f"recipients-unsub-{port}"}}  # fmt: skip

    w = make_world_with(extra=extra)
    _add_rule(w, "promo", "marketing")
    user = f"u-{w.unique}"
    w.import_recipients(Recipient(tenant="acme", id=user, email=f"{user}@example.com"))
    stages = ("route", "deliver", "audit", "recipients", "callbacks")
    with w.pipeline(stages):
        first = w.send_to_user("promo", user, 1)
        got = w.wait_mail(1)
        nid = _nid(first, "promo", user)
        assert got == {nid: 1}, got
        [eml] = list(w.sink.directory.glob(f"*{nid}*.eml"))
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        m = re.fullmatch(r"<(http://127\.0\.0\.1:\d+/callbacks/unsubscribe/[^>]+)>",
                         str(msg["List-Unsubscribe"]))  # fmt: skip
        assert m, msg["List-Unsubscribe"]
        url = m.group(1)

        # A link scanner's GET changes nothing.
        with urllib.request.urlopen(url, timeout=30) as resp:
            page = resp.read().decode()
        assert resp.status == 200 and '<form method="post">' in page
        stored = _stored(w, user)
        assert stored is not None and stored.preferences.categories == ()

        # A forged token and a body without the one-click field are refused.
        forged = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
        assert _post(forged, b"List-Unsubscribe=One-Click")[0] == 403
        assert _post(url, b"unsubscribe=yes")[0] == 400

        code, text = _post(url, b"List-Unsubscribe=One-Click")
        assert code == 200, text

        def opted_out() -> bool:
            r = _stored(w, user)
            return r is not None and r.preferences.categories == ("marketing",)

        wait_until(opted_out, 60, "the opt-out in the directory")
        assert _post(url, b"List-Unsubscribe=One-Click")[0] == 200, "a second click is fine"

        second = w.send_to_user("promo", user, 2)
        nid2 = _nid(second, "promo", user)

        def suppressed() -> bool:
            return any(s["data"]["notification_id"] == nid2 and s["data"]["status"] == "suppressed"
                       for s in _statuses(w))  # fmt: skip

        wait_until(suppressed, 60, "the second event's suppressed status")
    statuses = _statuses(w)
    unsub = [s for s in statuses if s["data"]["status"] == "unsubscribed"]
    assert {s["id"] for s in unsub} == {unsub[0]["id"]}, "the same status for every click"
    assert unsub[0]["source"] == "tidings/callbacks"
    assert unsub[0]["data"]["notification_id"] == nid
    assert unsub[0]["data"]["reason"] == "opt-out:category:marketing"
    assert unsub[0]["data"]["recipient_id"] == user
    [sup] = [s["data"] for s in statuses if s["data"]["notification_id"] == nid2]
    assert sup["reason"] == "opt-out:category:marketing"
    assert w.mail() == {nid: 1}, "the second marketing event sent nothing"


def test_deliver_rechecks_a_recipient_changed_after_route(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with()
    _add_rule(w, "digest", "news")
    quitter, mover, stays = (f"{x}-{w.unique}" for x in ("quit", "move", "stay"))
    w.import_recipients(*(Recipient(tenant="acme", id=u, email=f"{u}@example.com")
                          for u in (quitter, mover, stays)))  # fmt: skip
    with w.pipeline(("route",)):
        docs = {u: w.send_to_user("digest", u, i) for i, u in enumerate((quitter, mover, stays))}
        nids = {u: _nid(d, "digest", u) for u, d in docs.items()}

        def queued() -> bool:
            got = {s["data"]["notification_id"] for s in _statuses(w)
                   if s["data"]["status"] == "queued"}  # fmt: skip
            return set(nids.values()) <= got

        wait_until(queued, 60, "three queued notifications")
    # After route decided, before deliver: one opts out, one changes its email.
    w.import_recipients(
        Recipient(tenant="acme", id=quitter, email=f"{quitter}@example.com",
                  preferences=Preferences(categories=("news",))),
        Recipient(tenant="acme", id=mover, email=f"{mover}@elsewhere.example.com"),
    )  # fmt: skip
    with w.pipeline(("deliver", "audit")):
        got = w.wait_mail(1)

        def settled() -> bool:
            done = {s["data"]["notification_id"]: s for s in _statuses(w)
                    if s["data"]["status"] in ("suppressed", "sent")}  # fmt: skip
            return set(nids.values()) <= set(done)

        wait_until(settled, 60, "every notification suppressed or sent")
    final = {s["data"]["notification_id"]: s for s in _statuses(w)
             if s["data"]["status"] in ("suppressed", "sent")}  # fmt: skip
    assert final[nids[quitter]]["data"]["reason"] == "opt-out:category:news"
    assert final[nids[quitter]]["source"] == "tidings/deliver"
    assert final[nids[mover]]["data"]["reason"] == "address-changed"
    assert final[nids[stays]]["data"]["status"] == "sent"
    assert got == {nids[stays]: 1} and w.mail() == {nids[stays]: 1}
