"""The sustained rows of `make bench` (issue 12): the highest open-loop rate the shipped
`tidings run` keeps up with, end to end, and its latency at half that rate.

The pipeline rows measure a pre-produced backlog, where route races ahead of deliver and
takes CPU the steady state never gives it. These rows instead start the real command line
(`python -m streams.cli run`, as an operator would), feed it at a fixed rate with
bench/loadgen.py (open loop: it never waits for the pipeline) and read the `sent` statuses:

1. warm-up, then a calibration level at a low rate, drained: `sent` statuses per produced
   event (the 50-rule mixed workload makes ~1.9; the exact figure is measured, not assumed);
2. a ramp: `level_s` seconds at each rate, x1.2 from `start`, until a level is not kept up
   twice in a row, then one level halfway between the last kept and the first missed. A
   level is *kept up* when, 3 s after the generator stopped, ≥ 95% of its expected statuses
   have arrived and their p99 event → sent is ≤ 1 s (an overloaded pipeline's latency grows
   with the window);
   every level drains before the next;
3. 20 s at half the highest kept-up rate: the p50/p95/p99 the issue's target names.

Rows (all on the `mixed` channel mix, bench/workload.py):
- `sustained`: `tidings run`, its default: every stage its own child process;
- `sustained-2w`: `tidings run --stage route --stage audit` and
  `tidings run --stage deliver --workers 2` (two deliver members; route and audit one each);
- `sustained-threads`: `tidings run --threads`, all stages in one process.

CPU per notification at the highest kept-up level: tidings' processes with their children,
and the shared services (peers, broker, Postgres, Redis), per `sent` status in that level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.accounting import Service
from bench.deliver import _n
from bench.harness import (
    PY,
    Plan,
    Proc,
    SentReader,
    World,
    _loadgen,
    _observed,
    _pct,
    ensure_topics,
    running,
    scenario_topics,
)
from bench.workload import EVENT_TYPES

__all__ = ["SCENARIOS", "markdown", "plot", "print_row", "run"]

SCENARIOS = ("sustained", "sustained-2w", "sustained-threads")
MIX = "mixed"
_FORMS = {
    "sustained": [["run"]],
    "sustained-2w": [
        ["run", "--stage", "route", "--stage", "audit"],
        ["run", "--stage", "deliver", "--workers", "2"],
    ],
    "sustained-threads": [["run", "--threads"]],
}
_LABELS = {
    "sustained": "`tidings run` (a child process per stage)",
    "sustained-2w": "`tidings run`, deliver in 2 (`--stage deliver --workers 2`)",
    "sustained-threads": "`tidings run --threads` (one process)",
}
_STEP = 1.2
_GRACE_S = 3.0
_P99_OK_MS = 1000.0
_ON_TIME = 0.95
_QUIET_S = 2.0  # no `sent` status for this long: the pipeline is idle


@dataclass(frozen=True)
class SustainedPlan:
    level_s: float
    max_levels: int
    half_s: float


FULL = SustainedPlan(level_s=15.0, max_levels=14, half_s=20.0)
QUICK = SustainedPlan(level_s=6.0, max_levels=8, half_s=6.0)
_START = {"sustained": 200.0, "sustained-2w": 200.0, "sustained-threads": 150.0}


class _Level:
    """One open-loop level: produce, then what arrived on time, then drain."""

    def __init__(self, w: World, reader: SentReader, dataset: str, seed: int) -> None:
        self._w, self._reader, self._dataset, self._seed = w, reader, dataset, seed
        self._n = 0

    def run(
        self, rate: float, secs: float, cpu: list[Service], per_event: float | None
    ) -> dict[str, Any]:
        self._n += 1
        level = f"s{self._n:02d}"  # SentReader keys levels by the event id's first "-" part
        cpu0 = {s.name: s.cpu_s() for s in cpu}
        gen = _loadgen(self._w, rate, secs, level, self._seed, dataset=self._dataset)
        time.sleep(_GRACE_S)
        on_time = self._reader.count(level)
        cpu1 = {s.name: s.cpu_s() for s in cpu}
        with self._reader._lock:
            lat = [a for a, _ in self._reader.by_level.get(level, [])]
        produced = int(gen.get("produced") or 0)
        expected = produced * per_event if per_event else None
        drained = self._drain(level, expected)
        p99 = _pct(lat, 0.99)
        row: dict[str, Any] = {
            "level": level,
            "offered_events_per_s": round(rate, 1),
            "produced": produced,
            "generator_late_ms": gen.get("late_ms"),
            "sent_on_time": on_time,
            "sent": self._reader.count(level),
            "expected_sent": round(expected) if expected else None,
            "sent_per_s": round(on_time / secs, 1),  # statuses on time per offered second
            "p50_ms": _pct(lat, 0.5),
            "p95_ms": _pct(lat, 0.95),
            "p99_ms": p99,
            "max_ms": float(max(lat)) if lat else float("nan"),
            "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
            "drained": drained,
        }
        row["kept_up"] = bool(expected and on_time >= _ON_TIME * expected and p99 <= _P99_OK_MS)
        return row

    def _drain(self, level: str, expected: float | None, bound_s: float = 300.0) -> bool:
        """Wait for this level's statuses: all expected ones, or none new for a while.

        A missed level leaves a backlog longer than any fixed wait, so the bound is long; the
        row says whether the level drained, and the next level (above all the half level)
        must not start on a backlog (`settle`).
        """
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            if expected and self._reader.count(level) >= _ON_TIME * expected:
                return self.settle(quiet_s=1.0, bound_s=deadline - time.monotonic())
            if time.time() - self._reader.last_ms > _QUIET_S:
                return True  # idle: what did not come by now is late, not on its way
            time.sleep(0.5)
        return False

    def settle(self, quiet_s: float = _QUIET_S, bound_s: float = 300.0) -> bool:
        """Block until no `sent` status of any level arrived for `quiet_s`; False at the bound."""
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            if time.time() - self._reader.last_ms > quiet_s:
                return True
            time.sleep(0.25)
        return False


def _procs(w: World, name: str, cfg: Path) -> list[Proc]:
    return [
        Proc(
            f"{name}-{i}",
            [PY, "-m", "streams.cli", "--config", str(cfg), *argv],
            w.tmp / f"{name}-{i}.log",
        )
        for i, argv in enumerate(_FORMS[name])
    ]


def run(w: World, plan: Plan, name: str, *, quick: bool, seed: int) -> dict[str, Any]:
    """One sustained row (module docstring)."""
    sp = QUICK if quick else FULL
    cfg = w.config(name, name, plan, MIX)
    scenario_topics(w, cfg)
    ensure_topics(w, {f"{w.in_prefix(name)}{t}": plan.in_partitions for t in EVENT_TYPES})
    from schemas.settings import load_settings

    reader = SentReader(w.bootstrap, load_settings(str(cfg)).topics.status)
    try:
        with running(_procs(w, name, cfg)) as procs:
            return _ramp(w, name, procs, reader, sp, seed)
    finally:
        reader.close()


def _ramp(
    w: World, name: str, procs: list[Proc], reader: SentReader, sp: SustainedPlan, seed: int
) -> dict[str, Any]:
    lv = _Level(w, reader, name, seed)
    # Every stage joined its groups and made its connections: the first statuses came back.
    deadline = time.monotonic() + 120
    warm = lv.run(20.0, 5.0, [], None)
    while warm["sent"] == 0 and time.monotonic() < deadline:
        if not all(p.alive() for p in procs):
            raise RuntimeError(f"{name}: a tidings process exited (logs in {w.tmp})")
        warm = lv.run(20.0, 3.0, [], None)
    if warm["sent"] == 0:
        raise RuntimeError(f"{name}: no `sent` status within 120 s (logs in {w.tmp})")
    start = _START[name]
    # Twice a level's length: it also warms the stages' caches and the broker's JIT.
    cal = lv.run(start / 2, 2 * sp.level_s, [], None)
    per_event = cal["sent"] / cal["produced"] if cal["produced"] else 0.0
    if not per_event:
        raise RuntimeError(f"{name}: the calibration level produced no `sent` status")
    cpu = [Service(p.name, p.popen.pid) for p in procs] + _observed(w, MIX)
    levels: list[dict[str, Any]] = []
    rate = start
    ok: float | None = None
    miss: float | None = None
    for _ in range(sp.max_levels):
        row = lv.run(rate, sp.level_s, cpu, per_event)
        levels.append(row)
        _print_level(name, row)
        if not row["kept_up"]:
            # Once more: one stall (a rebalance, a collection) must not end the ramp.
            row = lv.run(rate, sp.level_s, cpu, per_event)
            row["retry"] = True
            levels.append(row)
            _print_level(name, row)
        if not all(p.alive() for p in procs):
            raise RuntimeError(f"{name}: a tidings process exited (logs in {w.tmp})")
        if not row["kept_up"]:
            miss = rate
            break
        ok = rate
        rate *= _STEP
    if ok is not None and miss is not None:
        row = lv.run((ok + miss) / 2, sp.level_s, cpu, per_event)
        levels.append(row)
        _print_level(name, row)
    kept = [r for r in levels if r["kept_up"]]
    best = max(kept, key=lambda r: r["offered_events_per_s"]) if kept else None
    out: dict[str, Any] = {
        "form": _LABELS[name],
        "mix": MIX,
        "sent_per_event": round(per_event, 3),
        "levels": levels,
        "ramp_capped": miss is None,  # every level kept up: the real maximum is higher
    }
    if best is None:
        return out
    # The ramp ended on a missed level: its backlog must be gone before the latency level.
    settled = lv.settle()
    half = lv.run(best["offered_events_per_s"] / 2, sp.half_s, [], per_event)
    half["after_backlog"] = not settled
    tidings = sum(best["cpu_s"][p.name] for p in procs)
    services = {k: v for k, v in best["cpu_s"].items() if k not in {p.name for p in procs}}
    n = best["sent_on_time"] or 1
    out.update(
        max_events_per_s=best["offered_events_per_s"],
        max_notifications_per_s=round(best["offered_events_per_s"] * per_event, 1),
        sent_per_s_at_max=best["sent_per_s"],
        p99_ms_at_max=best["p99_ms"],
        half=half,
        tidings_cpu_ms_per_notification=round(1000 * tidings / n, 3),
        service_cpu_ms_per_notification={k: round(1000 * v / n, 3) for k, v in services.items()},
    )
    return out


def _print_level(name: str, r: dict[str, Any]) -> None:
    print(
        f"    {name} @ {r['offered_events_per_s']:.0f} ev/s: {r['sent_on_time']}/"
        f"{r['expected_sent']} sent on time, p99 {r['p99_ms']:.0f} ms"
        f"{'' if r['kept_up'] else '  (not kept up)'}",
        flush=True,
    )


def print_row(name: str, r: dict[str, Any]) -> None:
    """The row's console line."""
    if "max_events_per_s" not in r:
        print(f"  {name:<27} kept up with no level", flush=True)
        return
    h = r["half"]
    print(
        f"  {name:<27} {r['max_events_per_s']:>10.0f} events/s sustained "
        f"({r['max_notifications_per_s']:.0f} notifications/s); at half: p50 {h['p50_ms']:.0f} "
        f"p99 {h['p99_ms']:.0f} ms; tidings {r['tidings_cpu_ms_per_notification']:.3f} CPU "
        f"ms/notification{' (half level after a backlog)' if h.get('after_backlog') else ''}  "
        f"[{r.get('step_s', 0):.0f} s]",
        flush=True,
    )


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    """one process / per stage, and `tidings run` / deliver in 2 (max notifications/s)."""

    def top(name: str) -> float | None:
        v = sc.get(name, {}).get("max_notifications_per_s")
        return float(v) if v else None

    def div(a: str, b: str) -> float | None:
        x, y = top(a), top(b)
        return round(x / y, 3) if x and y else None

    return {
        "threads/run": div("sustained-threads", "sustained"),
        "run/run-2w": div("sustained", "sustained-2w"),
    }


def markdown(sc: dict[str, Any]) -> list[str]:
    """The report's section on the sustained rows (nothing when none ran)."""
    rows = [(n, sc[n]) for n in SCENARIOS if n in sc]
    if not rows:
        return []
    lines = [
        "",
        "## Sustained end to end, open loop (issue 12)",
        "",
        "The command line as shipped, fed at a fixed rate (`bench/loadgen.py`) on the mixed "
        "channel mix, from a ramp x1.2 per level (bench/sustained.py says how a level counts "
        "as kept up: ≥ 95% of its `sent` statuses within 3 s of the generator's end, p99 ≤ 1 s). "
        "*max*: the highest kept-up level; *at half*: 20 s at half of it. CPU is per `sent` "
        "status at *max*: tidings' processes with their children, then the shared services.",
        "",
        "| row | max events/s | notifications/s | p99 ms at max | p50 / p95 / p99 ms at half "
        "| tidings CPU ms / notification | broker | Postgres | Redis | peers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {_LABELS[name]} | failed: {r['error'][:120]} | | | | | | | | |")
            continue
        if "max_events_per_s" not in r:
            lines.append(f"| {_LABELS[name]} | no level kept up | | | | | | | | |")
            continue
        h, svc = r["half"], r["service_cpu_ms_per_notification"]
        peers = sum(v for k, v in svc.items() if k in ("smtp-sink", "nginx"))
        capped = " (ramp capped)" if r.get("ramp_capped") else ""
        lines.append(
            f"| {_LABELS[name]} | {_n(r['max_events_per_s'])}{capped} | "
            f"{_n(r['max_notifications_per_s'])} | {_n(r['p99_ms_at_max'])} | "
            f"{_n(h['p50_ms'])} / {_n(h['p95_ms'])} / {_n(h['p99_ms'])}"
            f"{' (after a backlog)' if h.get('after_backlog') else ''} | "
            f"{_n(r['tidings_cpu_ms_per_notification'], 3)} | "
            f"{_n(svc.get('kafka broker'), 3)} | {_n(svc.get('postgres'), 3)} | "
            f"{_n(svc.get('redis'), 3)} | {_n(peers, 3)} |"
        )
    rt = ratios(sc)
    lines += [
        "",
        f"Ratios of max notifications/s: one process (`--threads`) / `tidings run` "
        f"{_n(rt['threads/run'], 3)}; `tidings run` / deliver in 2 {_n(rt['run/run-2w'], 3)}.",
    ]
    return lines


def plot(ax: Any, sc: dict[str, Any]) -> None:
    """Offered events/s against `sent` statuses/s on time, one line per row."""
    drawn = False
    for name in SCENARIOS:
        r = sc.get(name) or {}
        lv = sorted(r.get("levels") or [], key=lambda x: x["offered_events_per_s"])
        if not lv:
            continue
        x = [v["offered_events_per_s"] for v in lv]
        ax.plot(x, [v["sent_per_s"] for v in lv], "o-", label=name)
        drawn = True
    if not drawn:
        ax.set_axis_off()
        return
    ax.set_xlabel("offered events/s (open loop)")
    ax.set_ylabel("sent statuses/s on time")
    ax.set_title("sustained ramp (mixed channels)")
    ax.legend()
    ax.grid(alpha=0.3)
