"""The chaos checker on hand-made histories: what counts as lost, duplicated, repeated."""

from __future__ import annotations

import math
from pathlib import Path

from tests.chaos.checker import check
from tests.chaos.history import (
    Callback,
    Delivery,
    Expected,
    Fault,
    History,
    Poison,
    Status,
    takeovers_in,
)

A, B, C = (f"{c * 8}-0000-4000-8000-{c * 12}" for c in "abc")


def _status(nid: str, status: str = "sent", ce: str | None = None, off: int = 0) -> Status:
    return Status(nid, status, ce or f"{nid}:{status}", 0, off)


def _clean() -> History:
    """A and B sent once each, 1 s and 3 s after their events."""
    return History(
        expected=[Expected("e1", A, "email", 10.0), Expected("e2", B, "push", 11.0)],
        deliveries=[Delivery(A, "email", "smtp", 11.0), Delivery(B, "push", "fcm", 14.0)],
        statuses=[_status(A, off=1), _status(B, off=2)],
    )


def test_a_clean_history_passes_with_its_latency() -> None:
    r = check(_clean())
    assert r.ok, r.notes
    assert (r.events, r.lost, r.dup_allowed, r.dup_unallowed, r.dup_statuses) == (2, 0, 0, 0, 0)
    assert r.max_latency_s == 3.0
    assert r.recovery_s is None  # no fault


def test_no_delivery_is_lost() -> None:
    h = _clean()
    h.deliveries = h.deliveries[:1]
    r = check(h)
    assert not r.ok and r.lost == 1
    assert "no delivery at the peer" in r.notes[0] and B in r.notes[0]


def test_a_dead_lettered_event_is_lost_with_its_reason() -> None:
    h = _clean()
    h.deliveries = h.deliveries[:1]
    h.dlq_events = {"e2": "internal_error"}
    r = check(h)
    assert not r.ok and r.lost == 1
    assert "dead-lettered (internal_error)" in r.notes[0] and B in r.notes[0]


def test_a_delivery_without_a_committed_sent_status_is_lost() -> None:
    h = _clean()
    h.statuses = [_status(A), _status(B, "queued")]
    r = check(h)
    assert r.lost == 1 and "no committed `sent` status" in r.notes[0]


def test_unknown_accounts_for_a_notification_only_under_skip() -> None:
    h = _clean()
    h.deliveries = h.deliveries[:1]
    h.statuses = [_status(A), _status(B, "unknown")]
    assert check(h).lost == 1  # default policy resend: unknown is not an excuse
    h.ambiguity = {"push": "skip"}
    r = check(h)
    assert r.ok and r.unknown == 1


def test_a_duplicate_is_allowed_only_with_a_takeover_under_resend() -> None:
    h = _clean()
    h.deliveries.append(Delivery(A, "email", "smtp", 40.0))
    r = check(h)
    assert (r.dup_allowed, r.dup_unallowed, r.ok) == (0, 1, False)
    assert "no takeover logged" in r.notes[0]
    h.takeovers = {A}
    r = check(h)
    assert (r.dup_allowed, r.dup_unallowed, r.ok) == (1, 0, True)
    h.ambiguity = {"email": "skip"}
    r = check(h)
    assert (r.dup_allowed, r.dup_unallowed, r.ok) == (0, 1, False)


def test_a_takeover_elsewhere_does_not_excuse_a_duplicate() -> None:
    h = _clean()
    h.deliveries.append(Delivery(A, "email", "backup", 12.0))  # two peers count together
    h.takeovers = {B}
    assert check(h).dup_unallowed == 1


def test_one_cloudevent_at_two_offsets_is_a_duplicate_status() -> None:
    h = _clean()
    h.statuses.append(_status(A, off=7))
    r = check(h)
    assert r.dup_statuses == 1 and not r.ok
    assert f"sent of {A} x2" in r.notes[0]


def test_two_reads_of_one_offset_are_not_a_duplicate_status() -> None:
    h = _clean()
    h.statuses.append(_status(A, off=1))
    assert check(h).ok


def test_poison_must_reach_the_dlq() -> None:
    h = _clean()
    h.poison = [Poison("t/0/5", "deep-nesting", 9.0), Poison("t/1/2", "tombstone", 9.0)]
    h.dlq_origins = {"t/0/5"}
    r = check(h)
    assert r.events == 4 and r.lost == 1 and "t/1/2 (tombstone)" in r.notes[0]


def test_an_acknowledged_receipt_needs_a_delivered_status() -> None:
    h = _clean()
    h.callbacks = [Callback(A, 20.0), Callback(B, 21.0)]
    h.statuses.append(_status(A, "delivered", off=3))
    r = check(h)
    assert r.lost == 1 and B in r.notes[0]


def test_recovery_is_the_worst_gap_after_a_fault() -> None:
    h = _clean()
    h.faults = [Fault("kill", 10.5, 10.5), Fault("bounce", 12.0, 13.0)]
    r = check(h)
    assert r.recovery_s == 1.0  # 10.5 → 11.0 and 13.0 → 14.0


def test_no_delivery_after_a_fault_is_never_recovered_when_something_is_lost() -> None:
    h = _clean()
    h.expected.append(Expected("e3", C, "email", 12.0))
    h.faults = [Fault("partition", 14.0, 20.0)]
    r = check(h)
    assert r.recovery_s == math.inf and r.lost == 1
    h.expected.pop()
    assert check(h).recovery_s is None  # nothing left to do after the fault


def test_a_delivery_nobody_asked_for_fails() -> None:
    h = _clean()
    h.deliveries.append(Delivery(C, "email", "smtp", 12.0))
    r = check(h)
    assert r.unexpected == 1 and not r.ok


def test_takeover_lines_are_read_from_logs(tmp_path: Path) -> None:
    log = tmp_path / "deliver-0.log"
    log.write_text(
        f"12:00:01 WARNING deliver: took over the claim of {A} from a sender that died mid-send; "
        "if that send had reached the provider, this one duplicates it (same Message-ID)\n"
        "12:00:02 INFO deliver: something else\n"
    )
    assert takeovers_in([log, tmp_path / "missing.log"]) == {A}


def test_a_committed_status_missing_from_the_audit_log_is_lost() -> None:
    h = _clean()
    h.audited = {(A, "sent")}
    r = check(h)
    assert r.lost == 1 and f"sent of {B}" in r.notes[0]
    h.audited = None  # not read: not judged
    assert check(h).ok
