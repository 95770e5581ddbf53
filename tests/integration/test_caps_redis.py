"""Caps on the real Redis: a batch in one round trip, in order, all or nothing per request.

Every test uses its own uuid key prefix, so tests (and their runs) never share a counter.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from catalog import CapRequest, CapResult, CapRule, cap_checks, parse_caps
from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown
from streams.state import CapStore

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
T0 = 1_800_000_000_000  # a fixed "now" (ms): the store uses the caller's clock


@pytest.fixture
def store(settings: TidingsSettings) -> Iterator[CapStore]:
    s = CapStore(settings.redis.url.get_secret_value())
    yield s
    s.close()


@pytest.fixture
def prefix(unique: str, redis_client: redis.Redis) -> Iterator[str]:
    p = f"test:cap:{unique}:"
    yield p
    keys = list(redis_client.scan_iter(match=p + "*", count=1000))
    if keys:
        redis_client.delete(*keys)


def requests(
    caps: tuple[CapRule, ...], prefix: str, n: int, *, start: int = 0, channel: str = "push",
    rule_id: str = "promo", category: str = "marketing", recipient: str = "u1",
) -> list[CapRequest]:  # fmt: skip
    checks = cap_checks(
        caps, tenant="acme", recipient=recipient, channel=channel, category=category,
        rule_id=rule_id, prefix=prefix,
    )  # fmt: skip
    return [
        CapRequest(member=f"{rule_id}-{recipient}-{i}", checks=checks)
        for i in range(start, start + n)
    ]


PUSH_3H = {"scope": "recipient_channel", "channels": ["push"], "limit": 3, "window": "1h"}


def test_a_3_per_hour_cap_refuses_the_4th_within_one_batch(store: CapStore, prefix: str) -> None:
    caps = parse_caps([{**PUSH_3H, "behaviour": "defer"}])
    got = store.check(requests(caps, prefix, 5), T0)
    assert [r.allowed for r in got] == [True, True, True, False, False]
    assert got[3] == CapResult(
        allowed=False, cap="cap:recipient_channel:push:3/3600s", retry_at_ms=T0 + HOUR_MS,
        behaviour="defer",
    )  # fmt: skip


def test_a_3_per_hour_cap_refuses_the_4th_across_batches_and_frees_with_the_window(
    store: CapStore, prefix: str, redis_client: redis.Redis
) -> None:
    caps = parse_caps([PUSH_3H])
    for i in range(3):
        (r,) = store.check(requests(caps, prefix, 1, start=i), T0 + i * 60_000)
        assert r.allowed
    (r,) = store.check(requests(caps, prefix, 1, start=3), T0 + 10 * 60_000)
    assert not r.allowed and r.behaviour == "suppress"
    assert r.retry_at_ms == T0 + HOUR_MS  # when the first of the three leaves the window
    # Refused requests are not counted: still three entries, expiring one window after the last.
    (key,) = {c.key for c in requests(caps, prefix, 1)[0].checks}
    assert redis_client.zcard(key) == 3
    assert 0 < redis_client.pttl(key) <= HOUR_MS
    # An hour after the first: one slot free, and only one.
    got = store.check(requests(caps, prefix, 2, start=4), T0 + HOUR_MS)
    assert [r.allowed for r in got] == [True, False]
    assert got[1].retry_at_ms == T0 + 60_000 + HOUR_MS


def test_another_channel_and_another_recipient_have_their_own_counters(
    store: CapStore, prefix: str
) -> None:
    caps = parse_caps([{"scope": "recipient_channel", "limit": 1, "window": "1h"}])
    batch = [
        *requests(caps, prefix, 1, channel="push"),
        *requests(caps, prefix, 1, channel="sms"),
        *requests(caps, prefix, 1, recipient="u2"),
        *requests(caps, prefix, 1, start=9, channel="push"),
    ]
    assert [r.allowed for r in store.check(batch, T0)] == [True, True, True, False]


def test_the_frequency_budget_spans_two_rules_and_every_channel(
    store: CapStore, prefix: str
) -> None:
    caps = parse_caps([{"scope": "recipient", "limit": 3, "window": "1d"}])
    batch = [
        *requests(caps, prefix, 2, rule_id="promo", channel="email"),
        *requests(caps, prefix, 1, rule_id="digest", channel="push", category="news"),
        *requests(caps, prefix, 1, rule_id="digest", start=1, channel="sms", category="news"),
    ]
    got = store.check(batch, T0)
    assert [r.allowed for r in got] == [True, True, True, False]
    assert got[3].cap == "cap:recipient:3/86400s"
    (again,) = store.check(requests(caps, prefix, 1, rule_id="third", start=7), T0 + 5000)
    assert not again.allowed


def test_a_request_refused_by_one_cap_consumes_none_of_the_others(
    store: CapStore, prefix: str, redis_client: redis.Redis
) -> None:
    # push: 1/hour; the budget: 3/day. The 2nd push is refused by the push cap and must not
    # take a budget slot, so two emails still fit in the budget afterwards.
    caps = parse_caps([{**PUSH_3H, "limit": 1}, {"scope": "recipient", "limit": 3, "window": "1d"}])
    push = requests(caps, prefix, 3, channel="push")
    got = store.check(push, T0)
    assert [r.allowed for r in got] == [True, False, False]
    assert got[1].cap == "cap:recipient_channel:push:1/3600s"
    budget_key = push[0].checks[1].key
    assert redis_client.zcard(budget_key) == 1
    email = requests(caps, prefix, 3, channel="email", start=10)
    assert [r.allowed for r in store.check(email, T0)] == [True, True, False]
    # And the other way round: refused by the budget, nothing added to the push cap.
    later = requests(caps, prefix, 1, channel="push", start=20)
    (r,) = store.check(later, T0 + 2 * HOUR_MS)
    assert not r.allowed and r.cap == "cap:recipient:3/86400s"
    assert redis_client.zcard(push[0].checks[0].key) == 0  # the first push left its window


def test_a_request_counted_already_is_not_counted_twice(store: CapStore, prefix: str) -> None:
    # A batch redone (aborted transaction) carries the same members: same answers, no double count.
    caps = parse_caps([PUSH_3H])
    batch = requests(caps, prefix, 4)
    first = store.check(batch, T0)
    assert store.check(batch, T0 + 1000) == first
    assert [r.allowed for r in first] == [True, True, True, False]


def test_requests_without_caps_are_allowed_without_redis(prefix: str) -> None:
    dead = CapStore("redis://127.0.0.1:1/0", timeout_s=0.5)
    try:
        got = dead.check([CapRequest("a", ()), CapRequest("b", ())], T0)
        assert got == [CapResult(allowed=True)] * 2
        assert dead.check([], T0) == []
    finally:
        dead.close()


def test_a_batch_is_one_round_trip_even_when_split_into_several_script_runs(
    settings: TidingsSettings, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    executes: list[int] = []
    real = Pipeline.execute

    def spy(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        executes.append(len(self.command_stack))
        return real(self, raise_on_error)

    store = CapStore(settings.redis.url.get_secret_value(), max_checks=4)
    try:
        caps = parse_caps([PUSH_3H, {"scope": "recipient", "limit": 5, "window": "1d"}])
        store.check(requests(caps, prefix, 1, start=100), T0)  # the script is loaded now
        monkeypatch.setattr(Pipeline, "execute", spy)
        got = store.check(requests(caps, prefix, 7), T0)
    finally:
        store.close()
    assert executes == [4]  # 7 requests x 2 checks, ≤ 4 checks a run: 4 runs, one pipeline
    # In order across the runs: 2 more pushes fit the 3/hour cap (one was taken above).
    assert [r.allowed for r in got] == [True, True, False, False, False, False, False]


def test_noscript_after_script_flush_recovers(
    store: CapStore, prefix: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    caps = parse_caps([PUSH_3H])
    assert all(r.allowed for r in store.check(requests(caps, prefix, 2), T0))
    redis_client.script_flush()
    loads: list[str] = []
    real = store._redis.script_load

    def spy(script: str) -> Any:
        loads.append(script)
        return real(script)

    monkeypatch.setattr(store._redis, "script_load", spy)
    got = store.check(requests(caps, prefix, 2, start=2), T0 + 1)
    assert [r.allowed for r in got] == [True, False]
    assert len(loads) == 1  # NOSCRIPT seen, the script loaded, the batch sent again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_unreachable_raises_dependency_down_and_construction_connects_nothing() -> None:
    store = CapStore(f"redis://127.0.0.1:{_free_port()}/0", timeout_s=0.5)  # nothing listens
    try:
        caps = parse_caps([PUSH_3H])
        with pytest.raises(DependencyDown) as err:
            store.check(requests(caps, "test:cap:down:", 1), T0)
    finally:
        store.close()
    assert err.value.dependency == "redis"
    assert "Redis cap check failed" in str(err.value) and "tidings doctor" in str(err.value)
    assert isinstance(err.value.__cause__, redis.RedisError)


def test_a_key_of_the_wrong_type_is_a_dependency_error_not_a_crash(
    store: CapStore, prefix: str, redis_client: redis.Redis
) -> None:
    caps = parse_caps([PUSH_3H])
    batch = requests(caps, prefix, 1)
    redis_client.set(batch[0].checks[0].key, "not a zset")
    with pytest.raises(DependencyDown, match="WRONGTYPE"):
        store.check(batch, T0)
