"""A slow provider slows only its own traffic: while a webhook endpoint holds every request,
email keeps flowing; the held channel stays within its provider's concurrency limit and its
topic's in-flight bound, and once the endpoint answers, every webhook is delivered once."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from standardwebhooks import Webhook

from streams.dev.demo import cloudevent
from tests.integration.pipeline import World, wait_until
from tests.peers.http_server import HttpPeer, Recorded, Reply

pytestmark = pytest.mark.integration

ALERTS = 150
ORDERS = 100
LIMIT = 4  # the webhook provider's max_concurrency


class _Held:
    """Holds every request until released; counts requests in hand and accepted webhook ids."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.accepted: Counter[str] = Counter()

    def __call__(self, rec: Recorded) -> Reply:
        Webhook(self.secret).verify(rec.body, rec.headers)  # raises if forged
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            self.release.wait(90)  # bounded: the test releases it well before
        finally:
            with self.lock:
                self.active -= 1
                self.accepted[rec.headers["webhook-id"]] += 1
        return Reply(200)


def _alert(w: World, i: int, url: str) -> dict[str, Any]:
    return cloudevent(
        "infra.alert.database",
        {"alert_id": f"A-{w.unique}-{i}", "severity": "critical", "service": "db",
         "summary": "replication lag", "pager_url": url},
        source=f"urn:test:{w.unique}", tenant="platform", event_id=f"alert-{w.unique}-{i}",
    )  # fmt: skip


def test_a_slow_provider_holds_back_only_its_own_channel(
    make_world_with: Callable[..., World],
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    held = _Held(secret)
    with HttpPeer(held) as peer:
        w = make_world_with(
            # Tight process-wide bounds: without per-provider and per-topic limits the held
            # webhooks would take every send slot and every in-flight place.
            runtime={"send_concurrency": 8, "max_in_flight": 200, "max_in_flight_per_topic": 60},
            extra=lambda _: {
                "channels": {
                    "webhook": [
                        {"kind": "webhook", "name": "pager", "secrets": [secret],
                         "max_concurrency": LIMIT,
                         "http": {"allow": ["127.0.0.1/32"], "allow_http": True,
                                  "timeout_s": 120}},
                    ]
                }
            },
        )  # fmt: skip
        p = w.producer()
        # One endpoint URL per alert: each is its own recipient, so per-recipient order does
        # not serialise them and the provider limit is what bounds them.
        for i in range(ALERTS):
            p.produce(
                w.order_topic, value=json.dumps(_alert(w, i, f"{peer.url}/hook/{i}")).encode()
            )
        assert p.flush(30) == 0
        with w.pipeline() as metrics:
            wait_until(lambda: held.active >= LIMIT, 60, "the endpoint to hold requests")
            orders = w.send([(w.order_event(i), "structured") for i in range(ORDERS)])
            got = w.wait_mail(ORDERS, timeout_s=60)
            # Email went through while every webhook was still held at the endpoint.
            assert sum(held.accepted.values()) == 0
            assert held.active == LIMIT
            assert got == Counter({nid: 1 for nid in orders})
            held.release.set()
            wait_until(lambda: sum(held.accepted.values()) >= ALERTS, 120, "the webhooks")
            wait_until(lambda: metrics.snapshot().get("sent", 0) >= ALERTS + ORDERS, 60, "sent")
        assert held.peak == LIMIT, "at most max_concurrency requests at the endpoint at once"
        assert len(held.accepted) == ALERTS and set(held.accepted.values()) == {1}
    statuses = w.statuses()
    sent = Counter(nid for (nid, st), n in statuses.items() if st == "sent" for _ in range(n))
    assert len(sent) == ALERTS + ORDERS and set(sent.values()) == {1}
