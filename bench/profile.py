"""Summarize a py-spy `--format raw` (collapsed stacks) file: top functions by self and total time.

python -m bench.profile bench/results/profile-<ts>/route-route.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["summarize"]

_IDLE = re.compile(r"\b(consume|poll|wait|select|_worker|sleep|epoll)\b")


def _frames(stack: str) -> list[str]:
    # py-spy raw frames: "function (file.py:line)"; drop the line so one function is one row.
    out = []
    for f in stack.split(";"):
        m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", f)
        out.append(f"{m.group(1)} ({m.group(2)})" if m else f)
    return out


def summarize(path: Path, top: int = 25) -> str:
    """Top `top` functions by self time and by inclusive time, as text."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames = _frames(stack)
        total += k
        self_t[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    if not total:
        return "(no samples)"
    rows = [f"samples: {total} (all threads; idle waits included)", "", "self time:"]
    rows += [f"  {100 * v / total:5.1f}%  {k}" for k, v in self_t.most_common(top)]
    rows += ["", "inclusive time:"]
    rows += [f"  {100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    return "\n".join(rows)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"== {arg}\n{summarize(Path(arg))}\n")
