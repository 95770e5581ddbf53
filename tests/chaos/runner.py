"""`python -m tests.chaos.runner [--quick] [--only NAME[,NAME]] [--seed N] [--json PATH]`

Outside the chaos namespace it prepares the private stack's directory and re-runs itself
inside a new network namespace (tests/chaos/netns.py); inside, it starts the private stack,
runs the scenarios one after the other, prints the table, writes `--json`, and (for a full run
without --only) the table in docs/reliability.md. Exit code 0 when every scenario passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from tests.chaos.checker import Report
from tests.chaos.harness import Result, run_scenario
from tests.chaos.netns import INSIDE, bring_up_lo, run_inside
from tests.chaos.report import render, write_doc
from tests.chaos.scenarios import QUICK, SCENARIOS, Scenario
from tests.chaos.stack import ROOT, Stack

BUDGET_S = 19 * 60  # `make chaos` promises at most 20 minutes


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos.runner")
    ap.add_argument("--quick", action="store_true", help="the ~2 minute subset")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--no-doc", action="store_true", help="don't touch docs/reliability.md")
    ap.add_argument("--list", action="store_true")
    return ap.parse_args(argv)


def _stack(a: argparse.Namespace) -> Stack:
    # The quick subset (inside `make test`) has its own directories: it may run while a full
    # `make chaos` runs, each in its own namespace (so the same ports never collide).
    return Stack(local=ROOT / (".local/chaos-quick" if a.quick else ".local/chaos"))


def _pick(a: argparse.Namespace) -> list[Scenario]:
    pool = QUICK if a.quick else SCENARIOS
    if not a.only:
        return pool
    names = set(a.only.split(","))
    picked = [s for s in [*SCENARIOS, *QUICK] if s.name in names]
    if missing := names - {s.name for s in picked}:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(missing))}")
    return picked


def _inside(a: argparse.Namespace) -> int:
    for k in [k for k in os.environ if k.startswith("TIDINGS_")]:
        del os.environ[k]  # the config file of each world decides, nothing else
    bring_up_lo()
    stack, picked, t0 = _stack(a), _pick(a), time.monotonic()
    print(f"chaos: seed {a.seed}; {len(picked)} scenario(s); private stack {stack.bootstrap}",
          flush=True)  # fmt: skip
    results: list[Result] = []
    base = Path(tempfile.mkdtemp(prefix="chaos-", dir=stack.local))
    try:
        stack.partition(False)  # a rule left by a killed run
        stack.up()
        print(f"chaos: stack up in {time.monotonic() - t0:.0f} s; logs in {base}", flush=True)
        for sc in picked:
            if time.monotonic() - t0 > BUDGET_S:
                results.append(_failed(sc, a.seed, "not run: the 19 min budget was spent"))
                continue
            print(f"chaos: {sc.name}", flush=True)
            try:
                r = run_scenario(sc, stack, base, a.seed)
            except Exception as exc:
                traceback.print_exc()
                r = _failed(sc, a.seed, f"harness error: {type(exc).__name__}: {exc}")
                stack.partition(False)
                stack.up()  # whatever the fault left down
            results.append(r)
            p = r.report
            print(f"chaos: {sc.name}: {'ok' if p.ok else 'FAIL'} in {r.wall_s:.0f} s; "
                  f"restarts {r.restarts}", flush=True)  # fmt: skip
            for line in [*p.notes, *r.crashes, *(r.log_lines[:6] if not p.ok else [])]:
                print(f"    {line}", flush=True)
    finally:
        stack.partition(False)
        stack.down()
    wall = time.monotonic() - t0
    print(f"\nchaos: seed {a.seed}, {wall / 60:.1f} min\n{render(results)}", flush=True)
    if a.json:
        a.json.write_text(json.dumps([asdict(r) for r in results], indent=1, default=str))
    if not (a.quick or a.only or a.no_doc):
        write_doc(results, a.seed, wall)
    return 0 if results and all(r.report.ok for r in results) else 1


def _failed(sc: Scenario, seed: int, why: str) -> Result:
    rep = Report(lost=-1, notes=[why])
    return Result(sc.name, seed, rep, 0.0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _args(argv)
    if a.list:
        for s in [*SCENARIOS, *QUICK]:
            print(f"{s.name:24} {s.events:5} events over {s.duration_s:.0f} s")
        return 0
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 10**6)
        argv += ["--seed", str(a.seed)]
    if os.environ.get(INSIDE) == "1":
        return _inside(a)
    _stack(a).prepare()
    print(f"chaos: seed {a.seed} (rerun with --seed {a.seed})", flush=True)
    os.chdir(ROOT)
    return run_inside(argv, timeout_s=BUDGET_S + 180)


if __name__ == "__main__":
    sys.exit(main())
