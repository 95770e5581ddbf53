"""RetryPolicy: classification, full-jitter backoff, Retry-After, attempts per priority, tiers."""

from __future__ import annotations

import random

import httpx
import pytest

from processors.exceptions import PermanentSendError, RetryableSendError
from processors.retry import RetryPolicy, classify, tier_topic

RETRY = RetryableSendError("503 from provider", code="http_503")
PERM = PermanentSendError("400 from provider", code="http_400")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (None, "ok"),
        (RETRY, "retry"),
        (PERM, "dlq"),
        (TimeoutError(), "retry"),
        (ConnectionRefusedError(), "retry"),
        (httpx.ConnectError("refused"), "retry"),
        (KeyError("bug"), "dlq"),
    ],
)
def test_classify(exc: BaseException | None, outcome: str) -> None:
    assert classify(exc) == outcome


def test_backoff_is_full_jitter_within_exponential_cap() -> None:
    p = RetryPolicy(base_s=1.0, cap_s=50.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(50.0, 2.0 ** (attempt - 1))
        samples = [p.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # spreads over the whole range, not clustered
    assert p.backoff(10_000, rng) <= 50.0  # no overflow on absurd attempt numbers


def test_retry_after_is_a_floor() -> None:
    p = RetryPolicy(base_s=0.1, cap_s=1.0)
    exc = RetryableSendError("429", code="http_429", retry_after_s=42.0)
    for seed in range(20):
        d = p.decide(exc, attempt=1, priority="normal", now=100.0, rng=random.Random(seed))
        assert d.outcome == "retry"
        assert d.delay_s == 42.0
        assert d.due_at == 142.0
        assert d.tier_s == 60.0
        assert d.error_code == "http_429"


def test_tiers_never_return_early_and_cap_at_largest() -> None:
    p = RetryPolicy()
    assert [p.tier_for(x) for x in (0.0, 1.0, 1.01, 10.0, 59.0, 600.0, 5000.0)] == [
        1.0, 1.0, 10.0, 10.0, 60.0, 600.0, 600.0,
    ]  # fmt: skip
    assert tier_topic("notification.retry.", 10.0) == "notification.retry.10s"
    assert tier_topic("notification.retry.", 0.5) == "notification.retry.0.5s"


@pytest.mark.parametrize(("priority", "limit"), [("critical", 10), ("normal", 6), ("low", 3)])
def test_attempts_per_priority(priority: str, limit: int) -> None:
    p = RetryPolicy()
    rng = random.Random(1)
    last = p.decide(RETRY, attempt=limit, priority=priority, now=0, rng=rng)  # type: ignore[arg-type]
    before = p.decide(RETRY, attempt=limit - 1, priority=priority, now=0, rng=rng)  # type: ignore[arg-type]
    assert before.outcome == "retry"
    assert (last.outcome, last.error_code) == ("dlq", "retries_exhausted")
    assert "replay from the DLQ" in last.reason


def test_permanent_goes_to_dlq_at_first_attempt() -> None:
    d = RetryPolicy().decide(PERM, attempt=1, priority="critical", now=0, rng=random.Random())
    assert (d.outcome, d.error_code, d.attempt) == ("dlq", "http_400", 1)


def test_absurd_retry_after_is_dead_lettered() -> None:
    exc = RetryableSendError("429", code="http_429", retry_after_s=10 * 86400)
    d = RetryPolicy().decide(exc, attempt=1, priority="normal", now=0, rng=random.Random())
    assert (d.outcome, d.error_code) == ("dlq", "retry_after_too_long")


@pytest.mark.parametrize(
    "kw",
    [
        {"base_s": 0},
        {"base_s": 10, "cap_s": 1},
        {"tiers_s": ()},
        {"tiers_s": (10.0, 1.0)},
        {"max_attempts": {"normal": 3}},
    ],
)
def test_bad_config_is_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**kw)  # type: ignore[arg-type]
