"""Per-stage CPU accounting: CPU seconds per 1,000 notifications, per process, in one table.

The measured window gives each process's CPU seconds (psutil user+system, sampled by the
harness at the window's ends) and each runner's counter deltas. Every tidings process is
divided by *its own* work in that same window, never by another stage's:

- route: notifications it queued (`queued`);
- deliver: notifications it sent (`sent`);
- audit: status records it wrote (`audited`) ÷ 2, a delivered notification's `queued` and
  `sent` records;
- one process running all stages (`tidings run --threads`): its `sent`.

In a steady state these are all the delivered rate; when route runs ahead of deliver (its
input pre-produced, no back-pressure across processes) each still gets its own denominator.
The shared processes (the peers, the Kafka broker, Postgres, Redis) have no work of their own
to count and are divided by the notifications delivered in the window. Postgres counts its
backends too (each connection is a child process of the postmaster).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Service", "local_services", "stage_accounting"]

ROOT = Path(__file__).resolve().parents[1]

# Stage → (its counter, how many of that counter make one notification).
_STAGE_WORK: dict[str, tuple[str, int]] = {
    "route": ("queued", 1),
    "deliver": ("sent", 1),
    "audit": ("audited", 2),
}
# The local stack's pid files (deploy/local/stack.sh).
_PID_FILES = {
    "kafka broker": ".local/kafka/kafka.pid",
    "postgres": ".local/postgres/data/postmaster.pid",
    "redis": ".local/redis/redis.pid",
}


@dataclass(frozen=True)
class Service:
    """A process the bench did not start as a runner but whose CPU it reports (a peer, Kafka)."""

    name: str
    pid: int

    def cpu_s(self) -> float:
        """CPU seconds of the process and its children (live ones and reaped ones); 0 if gone."""
        try:
            p = psutil.Process(self.pid)
            c = p.cpu_times()
            total = c.user + c.system + c.children_user + c.children_system
            for child in p.children(recursive=True):
                try:
                    cc = child.cpu_times()
                    total += cc.user + cc.system
                except psutil.Error:
                    continue  # exited between listing and reading: counted once reaped
            return float(total)
        except psutil.Error:
            return 0.0


def _pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
        pid = int(text[0]) if text else 0
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and psutil.pid_exists(pid) else None


def local_services() -> list[Service]:
    """The running processes of the local stack (`make up`) that have a pid file."""
    out = []
    for name, rel in _PID_FILES.items():
        pid = _pid(ROOT / rel)
        if pid is not None:
            out.append(Service(name, pid))
    return out


def _row(
    process: str, role: str, cpu_s: float, work: float, unit: str, secs: float
) -> dict[str, Any]:
    return {
        "process": process,
        "role": role,
        "cpu_s": round(cpu_s, 3),
        "cores": round(cpu_s / secs, 3) if secs else None,
        "notifications": round(work, 1),
        "per": unit,
        "cpu_s_per_1k": round(1000 * cpu_s / work, 3) if work > 0 else None,
    }


def stage_accounting(r: dict[str, Any], stages: dict[str, str]) -> list[dict[str, Any]]:
    """The accounting rows of one measured pipeline window `r` (harness.measure's result).

    `stages` maps each runner process name to the stages it ran ("route", or
    "route,deliver,audit"). Returns one row per runner, a `tidings` total (the sum of the
    runners' per-1k figures: each is per notification it handled), then one per service.
    """
    secs = float(r["window_s"])
    cpu, counts = r["cpu_s_per_process"], r["counts_per_process"]
    delivered = sum(c.get("sent", 0) for c in counts.values())
    rows = []
    # Several worker processes of one stage (deliver x2) are one row: their CPU over their
    # work together, so the sum over stages stays "per notification".
    by_stage: dict[str, list[str]] = {}
    for proc, which in stages.items():
        by_stage.setdefault(which, []).append(proc)
    for which, procs in by_stage.items():
        key, per = _STAGE_WORK.get(which, ("sent", 1))
        work = sum(counts.get(proc, {}).get(key, 0) for proc in procs) / per
        unit = f"{key} ÷ {per}" if per > 1 else key
        label = procs[0] if len(procs) == 1 else f"{procs[0].rsplit('-', 1)[0]} x{len(procs)}"
        used = sum(cpu.get(proc, 0.0) for proc in procs)
        rows.append(_row(label, which.replace(",", "+"), used, work, unit, secs))
    per_1k = [x["cpu_s_per_1k"] for x in rows]
    if len(rows) > 1 and all(v is not None for v in per_1k):
        total = {
            "process": "tidings, all stages",
            "role": "sum of the rows above",
            "cpu_s": round(sum(x["cpu_s"] for x in rows), 3),
            "cores": round(sum(x["cores"] or 0 for x in rows), 3),
            "notifications": None,
            "per": "own",
            "cpu_s_per_1k": round(sum(v for v in per_1k if v is not None), 3),
        }
        rows.append(total)
    for name, s in r.get("service_cpu_s", {}).items():
        rows.append(_row(name, "service", s, delivered, "delivered", secs))
    return rows
