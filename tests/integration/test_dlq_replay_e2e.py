"""End to end: a permanent SMTP 550 dead-letters each notification with a `failed` status;
after the fix, `tidings dlq replay` delivers each exactly once, and replaying again (even
around the replay markers) sends nothing more."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from streams.cli import main
from streams.dlq_select import REPLAY_HEADER, replay_headers
from tests.integration.pipeline import World, wait_until

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
