"""The checker: reads a History, says what was lost, duplicated or repeated. Pure, no I/O.

- lost: an expected notification with no delivery at its peer or no committed `sent` status
  (under ambiguity policy `skip`, a committed `unknown` status accounts for it instead); a
  poison record missing from the DLQ; a receipt acknowledged by the callbacks stage with no
  committed `delivered` status.
- duplicated: a notification id delivered more than once at the peers. Allowed only when the
  deliver stage logged a takeover of that notification AND its channel's policy is `resend`.
- duplicate statuses: one CloudEvents id committed at two offsets. None allowed.
- recovery: per fault, from its end to the first delivery after it; the worst fault counts.
- latency: event acknowledged by the broker → first delivery at the peer, the worst one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.chaos.history import History

__all__ = ["Report", "check"]

_SAMPLE = 5  # ids quoted per problem in the notes


@dataclass
class Report:
    """One scenario's verdict, with enough detail to start debugging."""

    events: int = 0
    lost: int = 0
    dup_allowed: int = 0
    dup_unallowed: int = 0
    dup_statuses: int = 0
    unexpected: int = 0  # deliveries of notification ids nobody produced an event for
    unknown: int = 0  # notifications accounted by an `unknown` status (policy skip)
    recovery_s: float | None = None  # None: no fault, or no work left after it; inf: never
    max_latency_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.dup_unallowed or self.dup_statuses or self.unexpected)


def check(h: History) -> Report:
    """The verdict on one history; raises nothing."""
    r = Report(events=len(h.expected) + len(h.poison) + len(h.callbacks))
    delivered: Counter[str] = Counter(d.nid for d in h.deliveries)
    first: dict[str, float] = {}
    for d in h.deliveries:
        first[d.nid] = min(first.get(d.nid, math.inf), d.t)
    by_status: dict[str, set[str]] = defaultdict(set)
    for s in h.statuses:
        by_status[s.status].add(s.nid)
    _lost(h, r, delivered, by_status)
    _duplicates(h, r, delivered)
    _status_repeats(h, r)
    latencies = [first[e.nid] - e.t for e in h.expected if e.nid in first]
    r.max_latency_s = max(latencies) if latencies else None
    r.recovery_s = _recovery(h, r)
    return r


def _lost(h: History, r: Report, delivered: Counter[str], by_status: dict[str, set[str]]) -> None:
    why: dict[str, list[str]] = defaultdict(list)
    for e in h.expected:
        if h.policy(e.channel) == "skip" and e.nid in by_status["unknown"]:
            r.unknown += 1
        elif not delivered[e.nid] and e.event_id in h.dlq_events:
            why[f"dead-lettered ({h.dlq_events[e.event_id]})"].append(e.nid)
        elif not delivered[e.nid]:
            why["no delivery at the peer"].append(e.nid)
        elif e.nid not in by_status["sent"]:
            why["delivered, but no committed `sent` status"].append(e.nid)
    for p in h.poison:
        if p.origin not in h.dlq_origins:
            why["poison record not in the DLQ"].append(f"{p.origin} ({p.shape})")
    for c in h.callbacks:
        if c.nid not in by_status["delivered"]:
            why["receipt acknowledged, no committed `delivered` status"].append(c.nid)
    if h.audited is not None:
        mine = {e.nid for e in h.expected}
        missing = sorted({(s.nid, s.status) for s in h.statuses if s.nid in mine} - h.audited)
        why["committed status not in the audit log"] = [f"{st} of {n}" for n, st in missing]
        if not why["committed status not in the audit log"]:
            del why["committed status not in the audit log"]
    for reason, ids in why.items():
        r.lost += len(ids)
        r.notes.append(f"lost {len(ids)}: {reason}: {', '.join(ids[:_SAMPLE])}")
    if why:
        seen = Counter(s.status for s in h.statuses)
        r.notes.append(f"committed statuses seen: {dict(sorted(seen.items()))}")


def _duplicates(h: History, r: Report, delivered: Counter[str]) -> None:
    channel = {e.nid: e.channel for e in h.expected}
    unallowed: list[str] = []
    for nid, n in delivered.items():
        if nid not in channel:
            continue
        if n < 2:
            continue
        if nid in h.takeovers and h.policy(channel[nid]) == "resend":
            r.dup_allowed += 1
        else:
            r.dup_unallowed += 1
            logged = "takeover logged" if nid in h.takeovers else "no takeover logged"
            unallowed.append(f"{nid} x{n} ({channel[nid]}, {logged})")
    if unallowed:
        r.notes.append(f"unallowed duplicates {len(unallowed)}: {', '.join(unallowed[:_SAMPLE])}")
    strangers = sorted({d.nid for d in h.deliveries if d.nid not in channel})
    if strangers:
        r.unexpected = len(strangers)
        r.notes.append(f"deliveries nobody asked for {len(strangers)}: "
                       f"{', '.join(strangers[:_SAMPLE])}")  # fmt: skip


def _status_repeats(h: History, r: Report) -> None:
    places: dict[str, set[tuple[int, int]]] = defaultdict(set)
    what: dict[str, str] = {}
    for s in h.statuses:
        places[s.ce_id].add((s.partition, s.offset))
        what[s.ce_id] = f"{s.status} of {s.nid}"
    repeated = [f"{what[ce]} x{len(p)}" for ce, p in places.items() if len(p) > 1]
    r.dup_statuses = len(repeated)
    if repeated:
        r.notes.append(f"duplicate committed statuses {len(repeated)}: "
                       f"{', '.join(repeated[:_SAMPLE])}")  # fmt: skip


def _recovery(h: History, r: Report) -> float | None:
    worst: float | None = None
    times = sorted(d.t for d in h.deliveries)
    for f in h.faults:
        after = next((t for t in times if t > f.end), None)
        if after is None:
            # No delivery after the fault: recovered only if nothing was left to deliver.
            if r.lost:
                r.notes.append(f"no delivery after fault {f.name} ended")
                return math.inf
            continue
        worst = max(worst or 0.0, after - f.end)
    return worst
