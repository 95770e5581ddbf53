"""The deliver-alone rows of `make bench` (issue 12): the deliver stage with nothing else running.

In the pipeline rows route shares the machine's two cores with deliver while it works
through the pre-produced events far faster than deliver can send them: deliver gets about
0.7 of a core, and its CPU per send includes the cost of that contention. These rows
separate the two: `deliver-<mix>` (mixes email, webhook, inapp)

1. produces `DeliverPlan.events` pooled events for the row (bench/workload.py);
2. runs the route stage alone until it has routed all of them (the dispatch topics now hold
   the backlog, ~1.9 notifications an event), then stops it;
3. runs the deliver stage alone on that backlog and measures it like any pipeline row
   (warm-up, then the window, or up to the last send when the backlog runs dry).

Reported: sends/s, deliver CPU ms per send, its cores busy, and the CPU of the peer, the
broker, Postgres and Redis per send; plus the same client-library limit rows as the
pipeline (`limit-smtp`, `limit-aiohttp`) when they ran, as a ratio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    DELIVER_ALONE,
    Plan,
    World,
    _finish,
    _key_total,
    _observed,
    measure,
    produce,
    runner,
    running,
    scenario_topics,
)
from bench.workload import EventPool

__all__ = ["SCENARIOS", "DeliverPlan", "markdown", "run"]

SCENARIOS = DELIVER_ALONE  # deliver-email, deliver-webhook, deliver-inapp
_LIMIT = {"email": "limit-smtp", "webhook": "limit-aiohttp"}


@dataclass(frozen=True)
class DeliverPlan:
    events: int  # routed first: the backlog deliver works through
    route_timeout_s: float


FULL = DeliverPlan(events=30_000, route_timeout_s=240.0)
QUICK = DeliverPlan(events=6_000, route_timeout_s=90.0)


def _route_all(w: World, cfg: Path, name: str, n: int, timeout_s: float) -> float:
    """Run route alone until it has read `n` events; returns the seconds it took."""
    t0 = time.monotonic()
    with running([runner(w, f"{name}-route", "stages", cfg, "--stages", "route")]) as procs:
        while _key_total(procs, "events_in") < n:
            if time.monotonic() - t0 > timeout_s or not procs[0].alive():
                got = _key_total(procs, "events_in")
                why = "route died" if not procs[0].alive() else f"{timeout_s:.0f} s passed"
                raise RuntimeError(f"{name}: route read {got} of {n} events ({why})")
            time.sleep(0.3)
    return time.monotonic() - t0


def run(
    w: World, plan: Plan, name: str, pool: EventPool, *, quick: bool, prof: Path | None
) -> dict[str, Any]:
    """One deliver-alone row (module docstring)."""
    mix = name.removeprefix("deliver-")
    dp = QUICK if quick else FULL
    produce(w, pool, name, dp.events, f"{name}-{w.run}", plan.in_partitions)
    cfg = w.config(name, name, plan, mix)
    scenario_topics(w, cfg)
    route_s = _route_all(w, cfg, name, dp.events, dp.route_timeout_s)
    proc = runner(w, f"{name}-deliver", "stages", cfg, "--stages", "deliver")
    with running([proc]) as procs:
        r = measure(name, procs, "sent", plan, prof, _observed(w, mix))
    sent = r["counts_per_process"][proc.name].get("sent", 0)
    cpu = r["cpu_s_per_process"][proc.name]
    r.update(
        mix=mix,
        route_s=round(route_s, 1),
        sent_per_s=r["rates"].get("sent", 0.0),
        deliver_cpu_ms_per_send=round(1000 * cpu / sent, 3) if sent else None,
        deliver_cores=round(cpu / r["window_s"], 2),
        service_cpu_ms_per_send={
            k: round(1000 * v / sent, 3) if sent else None for k, v in r["service_cpu_s"].items()
        },
    )
    return _finish(r, r["sent_per_s"])


def _n(x: Any, digits: int = 0) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    return f"{x:,.{digits}f}"


def markdown(sc: dict[str, Any]) -> list[str]:
    """The report's section on the deliver-alone rows (nothing when none ran)."""
    rows = [(n, sc[n]) for n in SCENARIOS if n in sc]
    if not rows:
        return []
    lines = [
        "",
        "## Deliver alone (issue 12)",
        "",
        "The deliver stage alone on a backlog that route made first (route stopped before the "
        "window): no other tidings stage shares the cores. CPU is the deliver process's "
        "(psutil user+system) per notification sent in the window; the shared processes' CPU "
        "is per send too. *vs limit*: sends/s over the same run's client-library limit row.",
        "",
        "| row | sent/s | deliver CPU ms / send | deliver cores busy | peer | Kafka broker "
        "| Postgres | Redis | vs limit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        svc = r.get("service_cpu_ms_per_send", {})
        peer = next((v for k, v in svc.items() if k in ("smtp-sink", "nginx")), None)
        limit = sc.get(_LIMIT.get(r["mix"], ""), {})
        vs = (r["sent_per_s"] / limit["sends_per_s"]) if limit.get("sends_per_s") else None
        lines.append(
            f"| {name} | {_n(r['sent_per_s'])} | {_n(r['deliver_cpu_ms_per_send'], 3)} | "
            f"{_n(r['deliver_cores'], 2)} | {_n(peer, 3)} | {_n(svc.get('kafka broker'), 3)} | "
            f"{_n(svc.get('postgres'), 3)} | {_n(svc.get('redis'), 3)} | {_n(vs, 3)} |"
        )
    return lines
