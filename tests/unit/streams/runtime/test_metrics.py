"""Metrics: counters, readiness and bounded latency samples."""

from __future__ import annotations

from streams.runtime.metrics import Metrics


def test_quantiles_nearest_rank() -> None:
    m = Metrics()
    assert m.quantiles("x") == {}
    for v in range(1, 101):
        m.observe("x", float(v))
    assert m.quantiles("x", (0.5, 0.99, 1.0)) == {0.5: 50.0, 0.99: 99.0, 1.0: 100.0}


def test_samples_are_bounded() -> None:
    m = Metrics()
    for v in range(50_000):
        m.observe("y", float(v))
    q = m.quantiles("y", (0.5,))
    assert 20_000 < q[0.5] < 30_000  # a uniform reservoir keeps the median near the middle
    assert len(m._samples["y"]) == 10_000


def test_readiness_follows_dependencies() -> None:
    m = Metrics()
    m.set_down("deliver:redis", True)
    m.set_down("audit:postgres", True)
    assert not m.ready() and m.down() == ["audit:postgres", "deliver:redis"]
    m.set_down("deliver:redis", False)
    m.set_down("audit:postgres", False)
    assert m.ready()
