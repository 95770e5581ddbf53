"""Crashes and rebalances: no notification lost, none sent twice, no duplicate status.

Stages run as real processes (`tidings run --stage …`) so they can be killed
with SIGKILL at the worst moment: after sends, before their offsets commit.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from streams.app import stop_bound_s
from streams.dev.demo import Mode
from tests.integration.pipeline import World, wait_until

MODES: tuple[Mode, ...] = ("structured", "binary")


def _events(w: World, n: int) -> list[str]:
    items: list[tuple[dict[str, Any], Mode]] = [
        (w.order_event(i) if i % 2 == 0 else w.user_event(i), MODES[i % 2]) for i in range(n)
    ]
    return w.send(items)


def _assert_exactly_once(w: World, expected: list[str]) -> None:
    got = w.mail()
    assert set(got) == set(expected), (
        f"lost {len(set(expected) - set(got))}, unexpected {len(set(got) - set(expected))}"
    )
    dups = {k: v for k, v in got.items() if v > 1}
    assert not dups, f"{len(dups)} notification(s) sent more than once"
    statuses = w.statuses()
    sent = Counter(nid for (nid, st), c in statuses.items() if st == "sent" for _ in range(c))
    lost = [nid for nid in expected if sent[nid] == 0]
    assert not lost, f"{len(lost)} sent notification(s) without a committed `sent` status"
    dups = {nid: sent[nid] for nid in expected if sent[nid] > 1}
    assert not dups, f"duplicate committed `sent` statuses: {dups}"
    queued = Counter(nid for (nid, st), c in statuses.items() if st == "queued" for _ in range(c))
    assert all(queued[nid] == 1 for nid in expected), "exactly one committed `queued` status each"


def _assert_nothing_lost_duplicates_reported(
    w: World, expected: list[str]
) -> tuple[set[str], set[str]]:
    """Every notification arrived, each with one committed `sent`; the duplicates are all
    takeovers the restarted process (deliver-1) logged. Returns (duplicates, takeovers)."""
    got = w.mail()
    assert set(got) == set(expected), "nothing lost"
    dups = {nid for nid, n in got.items() if n > 1}
    log = (w.tmp / "deliver-1.log").read_text()
    taken_over = set(re.findall(r"took over the claim of ([0-9a-f-]{36})", log))
    assert dups <= taken_over, f"unreported duplicates: {dups - taken_over}"
    sent = Counter(nid for (nid, st), c in w.statuses().items() if st == "sent" for _ in range(c))
    assert all(sent[nid] == 1 for nid in expected), "exactly one committed `sent` status each"
    return dups, taken_over


def _kill_deliver_at_worst_moment(w: World, after: int) -> None:
    p = w.spawn("deliver", kill_after_sends=after)
    assert p.wait(90) == -signal.SIGKILL, f"deliver was not killed; log in {w.tmp}"
    assert sum(w.mail().values()) >= after, "the killed process had sent mail"


def test_deliver_killed_after_sends_before_commit(make_world_with: Callable[..., World]) -> None:
    # A long commit interval guarantees sends whose offsets were never committed.
    w = make_world_with(runtime={"commit_interval_s": 2.0})
    expected = _events(w, 160)
    with w.pipeline(("route",)):
        _kill_deliver_at_worst_moment(w, after=50)
        w.spawn("deliver")
        w.wait_mail(160)
        wait_until(lambda: len(w.mail()) >= 160, 60, "all mail")
        w.stop_all()
    _assert_exactly_once(w, expected)


def test_deliver_killed_and_redis_lost_postgres_keeps_sends_to_one(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with(runtime={"commit_interval_s": 2.0})
    expected = _events(w, 120)
    with w.pipeline(("route",)):
        _kill_deliver_at_worst_moment(w, after=40)
        # Redis loses its memory of every claim: only Postgres remembers the sends.
        r = redis.Redis.from_url(w.settings.redis.url.get_secret_value())
        lost = r.delete(*[f"tidings:claim:{nid}" for nid in expected])
        r.close()
        assert lost >= 40
        w.spawn("deliver")
        wait_until(lambda: len(w.mail()) >= 120, 90, "all mail")
        w.stop_all()
    _assert_exactly_once(w, expected)


def test_deliver_sigkill_mid_burst_against_a_slow_provider(
    make_world_with: Callable[..., World],
) -> None:
    """A kill at an arbitrary moment: nothing is lost, and the only possible duplicates are
    sends the provider accepted in the instant before the kill, which the restarted process
    can't know about and reports as taken-over claims (see docs/decisions/0003)."""
    w = make_world_with(sink_delay_s=0.05)
    expected = _events(w, 150)
    with w.pipeline(("route",)):
        p = w.spawn("deliver")
        # Killing right after seeing mail arrive is the adversarial moment: the provider has
        # just accepted a send whose acceptance the sender has not yet recorded.
        wait_until(lambda: sum(w.mail().values()) >= 40, 90, "a burst in flight")
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        w.spawn("deliver")
        wait_until(lambda: len(w.mail()) >= 150, 120, "all mail")
        w.stop_all()
    dups, taken_over = _assert_nothing_lost_duplicates_reported(w, expected)
    assert len(dups) <= w.settings.runtime.send_concurrency
    # Every resend after a takeover says so in its status: consumers can tell.
    flagged = {
        json.loads(m.value())["data"]["notification_id"]
        for m in w.read(w.settings.topics.status)
        if json.loads(m.value())["data"].get("possible_duplicate")
    }
    assert flagged == taken_over & set(expected), "possible_duplicate marks exactly the takeovers"


def test_route_killed_mid_burst(make_world_with: Callable[..., World]) -> None:
    w = make_world_with()
    expected = _events(w, 600)
    admin = AdminClient(w.settings.kafka.client_config())
    dispatch = w.settings.topics.dispatch("email")

    def dispatched() -> int:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({**w.settings.kafka.client_config(), "group.id": "wm-probe"})
        parts = admin.list_topics(dispatch, timeout=10).topics[dispatch].partitions
        total = sum(c.get_watermark_offsets(TopicPartition(dispatch, p), 5)[1] for p in parts)
        c.close()
        return total

    p = w.spawn("route")
    wait_until(lambda: dispatched() > 0, 90, "route to start producing")
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    w.spawn("route")
    with w.pipeline(("deliver",)):
        wait_until(lambda: len(w.mail()) >= 600, 120, "all mail")
    w.stop_all()
    committed = Counter(m.key() for m in w.read(dispatch))
    assert sum(committed.values()) == 600, "each notification committed once on dispatch"
    _assert_exactly_once(w, expected)


def test_rebalance_one_deliver_process_stops_mid_burst(
    make_world_with: Callable[..., World],
) -> None:
    w = make_world_with(sink_delay_s=0.02)
    expected = _events(w, 300)
    with w.pipeline(("route",)):
        a = w.spawn("deliver")
        b = w.spawn("deliver")
        wait_until(lambda: sum(w.mail().values()) >= 60, 90, "both sending")
        a.send_signal(signal.SIGTERM)
        # Within its stop bound (drain, the final commit retried, the worker's calls, close),
        # with room for a loaded machine; a member still running then is stuck.
        bound = stop_bound_s(w.settings) + 15
        t0 = time.monotonic()
        try:
            rc = a.wait(bound)
        except subprocess.TimeoutExpired:
            a.send_signal(signal.SIGUSR1)  # every thread's stack into its log (streams.app)
            time.sleep(2)
            a.kill()
            raise AssertionError(f"a stopping member is still running {bound:.0f} s after "
                                 f"SIGTERM:\n{w.log_tail(a, 200)}") from None  # fmt: skip
        took = time.monotonic() - t0
        assert rc == 0, (
            f"a stopping member drains, commits and exits 0 ({took:.1f} s):\n{w.log_tail(a)}"
        )
        wait_until(lambda: len(w.mail()) >= 300, 120, "all mail")
        # Statuses of sends whose commit the stopping member lost to the rebalance come from
        # the member that takes its partitions over: with static membership a member that
        # stops doesn't leave the group, so that is a session timeout (6 s) later.
        wait_until(lambda: _sent_statuses(w) >= set(expected), 120, "every `sent` status")
        assert b.poll() is None
        w.stop_all()
    _assert_exactly_once(w, expected)


def _sent_statuses(w: World) -> set[str]:
    return {nid for (nid, st) in w.statuses(idle_s=1.0) if st == "sent"}


def test_deliver_killed_while_retries_are_parked(make_world_with: Callable[..., World]) -> None:
    """Retry records ride in the transaction that commits the failed offset: a kill while
    retries are parked loses none and doubles none."""
    # The breaker stays closed (min_calls out of reach): every first attempt reaches the sink,
    # instead of most being parked by an open breaker before they are tried.
    w = make_world_with(
        runtime={"retry_backoff_s": 1.0},
        extra=lambda _: {"channels": {"breaker": {"min_calls": 1000}}},
    )
    w.sink.fail_with = (451, "try again later")
    expected = _events(w, 40)
    with w.pipeline(("route",)):
        p = w.spawn("deliver")
        wait_until(lambda: w.sink.rejected >= 40, 90, "every first attempt refused")
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        w.sink.fail_with = None
        w.spawn("deliver")
        wait_until(lambda: len(w.mail()) >= 40, 120, "all mail after the restart")
        w.stop_all()
    _assert_exactly_once(w, expected)


def test_deliver_killed_holding_a_batch_of_claims_none_sent(
    make_world_with: Callable[..., World],
) -> None:
    """kill -9 with a batch of claims taken (as many as the SMTP channel has slots: a claim
    is taken inside its provider slot) and no provider call made: the restarted process
    takes the dead member's claims over at once and sends each once."""
    w = make_world_with()
    expected = _events(w, 80)
    with w.pipeline(("route",)):
        p = w.spawn("deliver", kill_after_sends=6, kill_at="claimed")
        assert p.wait(90) == -signal.SIGKILL, f"deliver was not killed; log in {w.tmp}"
        assert not w.mail(), "the killed process sent nothing"
        w.spawn("deliver")
        wait_until(lambda: len(w.mail()) >= 80, 90, "all mail")
        w.stop_all()
    got = w.mail()
    assert set(got) == set(expected), "nothing lost"
    assert all(n == 1 for n in got.values()), "each sent once: no claim was sent by the dead"
    sent = Counter(nid for (nid, st), c in w.statuses().items() if st == "sent" for _ in range(c))
    assert all(sent[nid] == 1 for nid in expected), "exactly one committed `sent` status each"


def test_deliver_killed_after_sends_before_their_batched_record(
    make_world_with: Callable[..., World],
) -> None:
    """kill -9 inside the 25th provider answer, before that answer's record (and the records
    of the answers of the same moment, which ride one batch) started: nothing is lost; only
    those unrecorded sends may go twice, each reported as a takeover and flagged."""
    w = make_world_with()
    expected = _events(w, 80)
    with w.pipeline(("route",)):
        p = w.spawn("deliver", kill_after_sends=25, kill_at="accepted")
        assert p.wait(90) == -signal.SIGKILL, f"deliver was not killed; log in {w.tmp}"
        before = w.mail()
        assert sum(before.values()) >= 25, "the provider had the sends"
        w.spawn("deliver")
        wait_until(lambda: len(w.mail()) >= 80, 90, "all mail")
        w.stop_all()
    dups, _ = _assert_nothing_lost_duplicates_reported(w, expected)
    assert dups, "the unrecorded sends were resent (policy resend), the worst moment was hit"
    assert dups <= set(before), "only sends the dead process made go twice"
