"""Rendering per notification: tidings' `render_content` against bare Jinja2 on the same parts.

    PYTHONPATH=. .venv/bin/python -m bench.render [--notifications 2000] [--rounds 5]

For each channel mix of the bench workload (bench/workload.py: email, webhook, inapp) it
builds the 50-rule catalog, matches pooled events to get real (template, variables)
pairs, and times, in one process on one thread (CPU time):

- `tidings`: `TemplateSet.render_content`, what deliver calls per send (locale chain,
  sandbox, output and time caps, Content model);
- `jinja2`: `Template.render(context)` of the same compiled parts, joined with nothing
  else: the library's own cost, the baseline of the ratio.

Prints µs per notification and the ratio tidings / jinja2, best of `--rounds`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workload import MIXES, EventPool, matches, write_catalog
from catalog import load_catalog

__all__ = ["main"]

_Job = tuple[str, str, dict[str, Any]]


def _jobs(catalog: Any, n: int) -> list[_Job]:
    pool = EventPool(seed=1, size=4096)
    out: list[_Job] = []
    for found in matches(pool, catalog, 100 * len(pool)):  # bounded; n comes far sooner
        out += [(m.template_id, m.channel, {"recipient": m.recipient, **m.variables})
                for m in found]  # fmt: skip
        if len(out) >= n:
            break
    return out[:n]


def _best_us(run: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notifications", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    for mix in sorted(m for m in MIXES if m != "mixed"):
        with tempfile.TemporaryDirectory() as tmp:
            catalog = load_catalog(write_catalog(Path(tmp), mix))
            jobs = _jobs(catalog, args.notifications)
            ts = catalog.templates
            # The compiled parts of each job's default-locale variant, as deliver would pick.
            parts = [list(ts._parts(tid, ch, None).values()) for tid, ch, _ in jobs]

            def ours(ts: Any = ts, jobs: list[_Job] = jobs) -> None:
                for tid, ch, ctx in jobs:
                    ts.render_content(tid, ch, ctx)

            def bare(parts: list[Any] = parts, jobs: list[_Job] = jobs) -> None:
                for ps, (_, _, ctx) in zip(parts, jobs, strict=True):
                    for p in ps:
                        p.render(ctx)

            t_ours = _best_us(ours, len(jobs), args.rounds)
            t_bare = _best_us(bare, len(jobs), args.rounds)
        print(
            f"render {mix:8s} tidings {t_ours:6.1f} µs  jinja2 {t_bare:6.1f} µs  "
            f"ratio {t_ours / t_bare:.2f}  ({len(jobs)} notifications, best of {args.rounds})"
        )


if __name__ == "__main__":
    main()
