"""The chaos scenarios: which processes run, how much traffic, and the fault, with its timing
drawn from the scenario's seeded random generator. Each fault records what it did in
`ctx.faults` (the checker measures recovery from each fault's end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.chaos.history import Fault

if TYPE_CHECKING:
    from tests.chaos.harness import Ctx

__all__ = ["QUICK", "SCENARIOS", "Scenario"]

FaultFn = Callable[["Ctx"], None]


@dataclass(frozen=True)
class Scenario:
    """One scenario: `roles` are supervised `tidings run` processes (a stage name, or `all`)."""

    name: str
    fault: FaultFn
    roles: tuple[str, ...] = ("route", "deliver", "audit")
    events: int = 600
    duration_s: float = 30.0
    poison_every: int = 0
    callbacks: bool = False
    settle_s: float = 90.0
    tags: tuple[str, ...] = field(default=())


def _fault(ctx: Ctx, name: str, start: float, end: float | None = None) -> None:
    ctx.faults.append(Fault(name, start, start if end is None else end))
    ctx.say(f"fault {name}: {(end or start) - start:.1f} s")


def kill_stage(role: str, times: int = 3) -> FaultFn:
    """SIGKILL the supervised `role` at `times` random moments of the burst (≥ 4 s apart)."""

    def fault(ctx: Ctx) -> None:
        d = ctx.scenario.duration_s
        at = sorted(ctx.rng.uniform(0.1 * d, 0.9 * d) for _ in range(times))
        for k in range(1, len(at)):
            at[k] = max(at[k], at[k - 1] + 4.0)
        for t in at:
            ctx.sleep_until(t)
            when = ctx.sup[role].kill9()
            if when is not None:
                _fault(ctx, f"kill -9 {role}", when)

    return fault


def outage(what: str, down_s: float) -> FaultFn:
    """Take a service of the private stack away for `down_s` at a random moment, then back."""

    def fault(ctx: Ctx) -> None:
        ctx.sleep_until(ctx.rng.uniform(0.2, 0.4) * ctx.scenario.duration_s)
        s, t0 = ctx.stack, time.time()
        if what == "kafka":
            s.kill_kafka()
        elif what == "postgres":
            s.stop_postgres_immediate()
        elif what == "redis":
            s.kill_redis(empty=True)
        elif what == "partition":
            s.partition(True)
        time.sleep(down_s)
        if what == "partition":
            s.partition(False)
        else:
            s.up(what)
        _fault(ctx, f"{what} {'cut' if what == 'partition' else 'down'}", t0, time.time())

    return fault


def flushall(ctx: Ctx) -> None:
    """Redis FLUSHALL once a random 20-60% of the traffic was delivered."""
    ctx.wait_delivered(ctx.rng.uniform(0.2, 0.6))
    ctx.stack.flushall()
    _fault(ctx, "redis FLUSHALL", time.time())


def providers_refuse(ctx: Ctx) -> None:
    """The primary SMTP server answers 451 and the primary FCM 503, for 30 s."""
    ctx.sleep_until(ctx.rng.uniform(0.1, 0.25) * ctx.scenario.duration_s)
    t0 = time.time()
    ctx.world.smtp[0].failing = ctx.world.fcm[0].failing = True
    time.sleep(30)
    ctx.world.smtp[0].failing = ctx.world.fcm[0].failing = False
    _fault(ctx, "smtp 451 + fcm 503", t0, time.time())


def rebalance_storm(ctx: Ctx) -> None:
    """Extra deliver members join and leave every 3 s for 60 s."""
    ctx.sleep_until(2.0)
    t0 = time.time()
    prev = None
    for k in range(20):
        cur = ctx.extra(f"deliver-x{k}", "deliver")
        if prev is not None:
            prev.terminate()
        prev = cur
        time.sleep(3.0)
    if prev is not None:
        prev.terminate()
    _fault(ctx, "rebalance storm", t0, time.time())


def nothing(ctx: Ctx) -> None:
    """No fault beyond the traffic itself (poison records ride in it)."""


SCENARIOS: list[Scenario] = [
    Scenario("kill-route", kill_stage("route")),
    Scenario("kill-deliver", kill_stage("deliver")),
    Scenario("kill-audit", kill_stage("audit")),
    Scenario("kill-callbacks", kill_stage("callbacks"),
             roles=("route", "deliver", "audit", "callbacks"), callbacks=True),
    Scenario("kill-run-all", kill_stage("all"), roles=("all",)),
    Scenario("broker-bounce", outage("kafka", 10.0)),
    Scenario("postgres-down-30s", outage("postgres", 30.0), duration_s=40.0),
    Scenario("redis-down-20s", outage("redis", 20.0), duration_s=35.0),
    Scenario("redis-flushall", flushall),
    Scenario("rebalance-storm", rebalance_storm, events=900, duration_s=62.0),
    Scenario("providers-refuse-30s", providers_refuse, duration_s=40.0),
    Scenario("poison-1pct", nothing, events=1000, poison_every=100),
    Scenario("partition-60s", outage("partition", 60.0), duration_s=30.0, settle_s=120.0),
]  # fmt: skip

# About 2 minutes (inside `make test`): one kill each of deliver and route, FLUSHALL, a bounce.
QUICK: list[Scenario] = [
    Scenario("quick-kill-deliver", kill_stage("deliver", 1), events=200, duration_s=10.0,
             settle_s=60.0),
    Scenario("quick-kill-route", kill_stage("route", 1), events=200, duration_s=10.0,
             settle_s=60.0),
    Scenario("quick-redis-flushall", flushall, events=200, duration_s=10.0, settle_s=60.0),
    Scenario("quick-broker-bounce", outage("kafka", 10.0), events=200, duration_s=12.0,
             settle_s=60.0),
]  # fmt: skip
