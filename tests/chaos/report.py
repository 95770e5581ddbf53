"""The chaos table: printed after a run, and written into docs/reliability.md (with the commit
and the date) between two markers, so the prose around it stays hand-written.
"""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime

from tests.chaos.harness import Result
from tests.chaos.stack import ROOT

__all__ = ["DOC", "render", "write_doc"]

DOC = ROOT / "docs/reliability.md"
BEGIN, END = "<!-- chaos-table:begin -->", "<!-- chaos-table:end -->"
HEAD = ("scenario", "events", "lost", "dup allowed", "dup unallowed", "dup statuses",
        "recovery s", "max latency s", "verdict")  # fmt: skip


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return "never" if math.isinf(x) else f"{x:.1f}"


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for r in results:
        p = r.report
        out.append((r.name, str(p.events), str(p.lost), str(p.dup_allowed), str(p.dup_unallowed),
                    str(p.dup_statuses), _s(p.recovery_s), _s(p.max_latency_s),
                    "ok" if p.ok else "FAIL"))  # fmt: skip
    return out


def render(results: list[Result]) -> str:
    """A Markdown table (also readable on a terminal)."""
    body = rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(HEAD)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEAD), sep, *(line(r) for r in body)])


def commit() -> str:
    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return p.stdout.strip() if p.returncode == 0 else ""

    head = git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (+ uncommitted changes)" if dirty else "")


def write_doc(results: list[Result], seed: int, wall_s: float) -> None:
    """Replace the table between the markers of docs/reliability.md (or append it)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = [f"- **{r.name}**: " + "; ".join(r.report.notes + r.crashes)
             for r in results if r.report.notes or r.crashes]  # fmt: skip
    block = "\n".join([
        BEGIN,
        f"Measured by `make chaos` at commit `{commit()}` on {stamp}; seed {seed}; "
        f"{wall_s / 60:.1f} min.",
        "",
        render(results),
        "",
        *(["What the checker saw:", "", *notes, ""] if notes else []),
        END,
    ])  # fmt: skip
    text = DOC.read_text() if DOC.exists() else "# Reliability\n\n"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        text = pre + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)
