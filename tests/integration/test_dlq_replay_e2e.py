"""End to end: a permanent SMTP 550 or HTTP 400 dead-letters each notification once with a
`failed` status; after the fix, `tidings dlq replay` delivers each exactly once, and replaying
again (even around the replay markers) sends nothing more."""

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

from streams.cli.main import main
from streams.dev.demo import cloudevent
from streams.dlq.select import REPLAY_HEADER, replay_headers
from tests.integration.pipeline import World, wait_until
from tests.peers.http_server import HttpPeer, Recorded, Reply

pytestmark = pytest.mark.integration

N = 6


def test_replay_after_a_fix_delivers_each_dead_letter_exactly_once(
    make_world_with: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_world_with()
    s = w.settings
    w.sink.fail_with = (550, "mailbox unavailable")
    expected = w.send([(w.order_event(i), "structured") for i in range(N)])
    assert len(set(expected)) == N
    dispatch = s.topics.dispatch("email")

    def replay() -> str:
        rc = main(["--config", str(w.config), "dlq", "replay", "--reason", "smtp_550"])
        _, err = capsys.readouterr()
        assert rc == 0, err
        return err

    with w.pipeline() as metrics:
        wait_until(lambda: metrics.snapshot().get("failed", 0) >= N, 90, "the 550 failures")
        assert w.mail() == Counter()
        assert w.sink.rejected >= N

        dead = w.read(s.topics.dlq)
        assert len(dead) == N
        for m in dead:
            h = {k: (v or b"").decode() for k, v in m.headers()}
            assert h["tidings-dlq-stage"] == "deliver"
            assert h["tidings-dlq-reason"] == "smtp_550"
            assert h["kafka_dlt-original-topic"] == dispatch
            assert "550" in h["kafka_dlt-exception-message"]

        rc = main(["--config", str(w.config), "dlq", "list", "--reason", "smtp_550"])
        out, _ = capsys.readouterr()
        assert rc == 0 and len(out.splitlines()) == N

        w.sink.fail_with = None
        assert f"replayed {N}, skipped 0" in replay()
        got = w.wait_mail(N)
        assert got == Counter({nid: 1 for nid in expected})

        # Again: every record is marked replayed, nothing is produced.
        assert f"replayed 0, skipped {N} already replayed" in replay()

        # Even a second copy that went around the markers (say, produced by hand) is not
        # sent again: the notification ids are the same and deliver's claims say "sent".
        p = w.producer()
        for m in dead:
            hdrs: Any = replay_headers(m.headers(), m.partition(), m.offset())
            p.produce(dispatch, key=m.key(), value=m.value(), headers=hdrs)
        assert p.flush(30) == 0
        wait_until(lambda: metrics.snapshot().get("dup", 0) >= N, 90, "the copies to be seen")
        assert w.mail() == Counter({nid: 1 for nid in expected})
        assert w.sink.duplicates == 0

    replays = [m for m in w.read(dispatch) if REPLAY_HEADER in dict(m.headers() or [])]
    assert len(replays) == 2 * N, "N from `dlq replay`, N copies by hand, none from the rerun"
    statuses = w.statuses()
    for nid in expected:
        assert statuses[(nid, "failed")] == 1, nid
        assert statuses[(nid, "sent")] >= 1, nid
    failed = [
        json.loads(m.value())["data"]
        for m in w.read(s.topics.status)
        if dict(m.headers())["ce_type"] == b"notification.failed"
    ]
    assert {d["error"]["code"] for d in failed} == {"smtp_550"}


def test_a_permanent_http_400_dead_letters_once_and_replay_after_the_fix_delivers_once(
    make_world_with: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    broken = threading.Event()
    broken.set()
    accepted: Counter[str] = Counter()
    refused: Counter[str] = Counter()

    def endpoint(rec: Recorded) -> Reply:
        Webhook(secret).verify(rec.body, rec.headers)  # raises if forged
        wid = rec.headers["webhook-id"]
        if broken.is_set():  # the receiver's schema check rejects our payload
            refused[wid] += 1
            return Reply(400, body=b'{"error":"unknown field severity"}')
        accepted[wid] += 1
        return Reply(200)

    with HttpPeer(endpoint) as peer:
        w = make_world_with(
            extra=lambda _: {
                "channels": {
                    "webhook": [
                        {"kind": "webhook", "name": "pager", "secrets": [secret],
                         "http": {"allow": ["127.0.0.1/32"], "allow_http": True}},
                    ]
                }
            }
        )  # fmt: skip
        s = w.settings
        p = w.producer()
        for i in range(N):
            doc = cloudevent(
                "infra.alert.database",
                {"alert_id": f"A-{w.unique}-{i}", "severity": "critical", "service": "db",
                 "summary": "disk full", "pager_url": f"{peer.url}/hook"},
                source=f"urn:test:{w.unique}", tenant="platform", event_id=f"a-{w.unique}-{i}",
            )  # fmt: skip
            p.produce(w.order_topic, value=json.dumps(doc).encode())
        assert p.flush(30) == 0

        def replay() -> str:
            rc = main(["--config", str(w.config), "dlq", "replay", "--reason", "http_400"])
            _, err = capsys.readouterr()
            assert rc == 0, err
            return err

        with w.pipeline():
            # N webhooks refused with 400, N Slack ones without a provider: all dead letters.
            wait_until(lambda: len(w.read(s.topics.dlq, idle_s=1)) >= 2 * N, 90, "dead letters")
            assert len(refused) == N and set(refused.values()) == {1}, "400 is not retried"
            dead = w.read(s.topics.dlq)
            reasons = Counter(dict(m.headers())["tidings-dlq-reason"].decode() for m in dead)
            assert reasons == Counter({"http_400": N, "no_provider": N})
            broken.clear()
            assert f"replayed {N}, skipped 0" in replay()
            wait_until(lambda: len(accepted) >= N, 90, "the replayed webhooks")
            assert f"replayed 0, skipped {N} already replayed" in replay()
            w.read(s.topics.status, idle_s=2)  # let the second replay settle
        assert set(accepted) == set(refused) and set(accepted.values()) == {1}
    statuses = w.statuses()
    for wid in accepted:  # webhook-id is the notification id
        assert statuses[(wid, "failed")] == 1 and statuses[(wid, "sent")] == 1, wid
    failed = [
        json.loads(m.value())["data"]
        for m in w.read(s.topics.status)
        if dict(m.headers())["ce_type"] == b"notification.failed"
        and json.loads(m.value())["data"]["channel"] == "webhook"
    ]
    assert {d["error"]["code"] for d in failed} == {"http_400"}
    assert all("400" in d["error"]["message"] for d in failed)
