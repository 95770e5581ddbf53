"""Failover: ordered providers, breakers skip the broken one, all-open retries later."""

from __future__ import annotations

import asyncio

import pytest

from processors.breaker import BreakerConfig
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.failover import DEFAULT_LIMIT, Failover
from schemas.content import Content
from schemas.notification import Notification

from .fakes import SMS, FakeClock, ScriptedProvider, notification

CFG = BreakerConfig(window_s=60, min_calls=3, failure_rate=0.5, open_for_s=30)
DOWN = RetryableSendError("503 Service Unavailable", code="http_503")


def run(f: Failover, nid: str) -> str:
    result = asyncio.run(f.send_with(notification(nid), SMS))
    return result.provider


def test_outage_fails_over_then_breaker_skips_primary_then_recovers() -> None:
    clock = FakeClock()
    primary, secondary = ScriptedProvider("primary"), ScriptedProvider("secondary")
    primary.fail_always = DOWN
    f = Failover("sms", [primary, secondary], breaker_config=CFG, clock=clock)
    carried = [run(f, f"n{i}") for i in range(10)]
    assert carried == ["secondary"] * 10  # nothing lost: every message went out
    assert f.breakers["primary"].state == "open"
    assert len(secondary.sent) == 10
    # The primary recovers; after open_for_s one probe goes to it and closes the breaker.
    primary.fail_always = None
    clock.advance(31)
    assert run(f, "probe") == "primary"
    assert f.breakers["primary"].state == "closed"
    assert run(f, "after") == "primary"


def test_all_breakers_open_raises_retryable_with_wait() -> None:
    clock = FakeClock()
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    a.fail_always = b.fail_always = DOWN
    f = Failover("sms", [a, b], breaker_config=CFG, clock=clock)
    for i in range(3):
        with pytest.raises(RetryableSendError, match="every available provider failed"):
            run(f, f"n{i}")
    clock.advance(10)
    with pytest.raises(RetryableSendError) as info:
        run(f, "x")
    assert info.value.code == "all_providers_unavailable"
    assert info.value.retry_after_s == pytest.approx(20.0)


def test_permanent_error_does_not_fail_over_and_counts_as_success() -> None:
    a, b = (
        ScriptedProvider("a", [PermanentSendError("bad number", code="http_400")]),
        (ScriptedProvider("b")),
    )
    f = Failover("sms", [a, b], breaker_config=CFG, clock=FakeClock())
    with pytest.raises(PermanentSendError):
        run(f, "n")
    assert b.sent == []
    assert f.breakers["a"].failure_rate() == 0.0


def test_ambiguous_timeout_is_not_sent_twice() -> None:
    a = ScriptedProvider("a", [RetryableSendError("read timed out", code="timeout")])
    b = ScriptedProvider("b")
    f = Failover("sms", [a, b], breaker_config=CFG, clock=FakeClock())
    with pytest.raises(RetryableSendError, match="read timed out"):
        run(f, "n")
    assert b.sent == []


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="no providers"):
        Failover("sms", [])
    with pytest.raises(ValueError, match="unique"):
        Failover("sms", [ScriptedProvider("a"), ScriptedProvider("a")])


class _Held(ScriptedProvider):
    """Holds every send until released, counting how many are in flight at once."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = asyncio.Event()
        self.active = 0
        self.peak = 0

    async def send(self, n: Notification, content: Content) -> str:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
            return await super().send(n, content)
        finally:
            self.active -= 1


def test_a_slow_provider_holds_only_its_own_slots() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        slow = _Held("slow")
        fast_channel = Failover("sms", [ScriptedProvider("fast")])
        slow_channel = Failover("sms", [slow], limits={"slow": 2})
        stuck = [
            asyncio.ensure_future(slow_channel.send_with(notification(f"s{i}"), SMS))
            for i in range(10)
        ]
        await asyncio.sleep(0.01)
        # Ten sends wait for the slow provider, only two of them at it; the other channel
        # still gets through.
        fast = await asyncio.wait_for(
            asyncio.gather(*(fast_channel.send_with(notification(f"f{i}"), SMS)
                             for i in range(5))),
            timeout=5,
        )  # fmt: skip
        in_flight = slow.active
        slow.release.set()
        done = await asyncio.wait_for(asyncio.gather(*stuck), timeout=5)
        return in_flight, slow.peak, [r.provider for r in [*fast, *done]]

    in_flight, peak, carriers = asyncio.run(scenario())
    assert in_flight == 2 and peak == 2
    assert carriers == ["fast"] * 5 + ["slow"] * 10


def test_limits_must_be_positive_and_the_channel_slot_is_the_largest() -> None:
    f = Failover("sms", [ScriptedProvider("a"), ScriptedProvider("b")], limits={"a": 4})
    assert f.limits == {"a": 4, "b": DEFAULT_LIMIT}
    with pytest.raises(ValueError, match="limits must be >= 1"):
        Failover("sms", [ScriptedProvider("a")], limits={"a": 0})
