"""Rate limits and frequency caps over one routed batch: which notifications pass. Pure.

After the batch's records are decided (streams/stages/route_decide.py), `cap_requests`
lists one `CapRequest` per directory notification the caps (`route.caps`) apply to; route
checks them all in one Redis round trip (`streams.state.CapStore`), and `apply_caps`
rewrites the batch's outputs with the answers:

- allowed: unchanged (and counted in every cap, all or nothing);
- refused, behaviour `suppress`: the dispatch record goes, its `queued` status becomes a
  `suppressed` one with the cap as reason (`cap:recipient:10/86400s`);
- refused, behaviour `defer`: the dispatch record is parked until the cap's window has
  room (the quiet-hours parking of streams/stages/deliver_outputs.py), `queued` stays.

Critical notifications and required categories bypass caps (they are never counted).
One notification per device (push) counts once: the devices of one (event, rule, user,
channel) share one request. Redis lost means caps count from zero (documented); an
unreachable Redis makes route wait, never fail open silently.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from catalog.caps import CapRequest, CapResult, CapRule, cap_checks
from schemas.notification import PER_ADDRESS, Notification, notification_id
from schemas.settings import TidingsSettings
from streams.runtime.records import Out
from streams.stages.deliver_outputs import park, suppressed_status

__all__ = ["Made", "apply_caps", "cap_requests", "capped_group"]


def capped_group(n: Notification) -> str:
    """What one cap request stands for: the notification without its device."""
    if n.channel not in PER_ADDRESS and n.user:
        return n.id  # one notification per (event, rule, user, channel): this very id
    return notification_id(n.event_source, n.event_id, n.rule_id, n.user or n.recipient, n.channel)


# The directory notifications route made for a batch, by their encoded dispatch record: the
# caps pass reads them from here instead of decoding every dispatch record again.
Made = Mapping[bytes, Notification]


def _capped(settings: TidingsSettings, o: Out, made: Made | None) -> Notification | None:
    t = settings.topics
    if not o.topic.startswith(t.dispatch_prefix) or o.value is None:
        return None
    n = made.get(o.value) if made is not None else None
    if n is None:
        if made is not None:
            return None  # not a directory notification of this batch
        n = Notification.decode(o.value)
    return n if n.user is not None else None


def cap_requests(
    settings: TidingsSettings,
    caps: Sequence[CapRule],
    outs: Sequence[Out],
    required: Mapping[str, Collection[str]],
    made: Made | None = None,
) -> list[CapRequest]:
    """One request per capped group of the batch's dispatch records, in output order.

    `made`: the batch's directory notifications by encoded record (route's `finish_record`
    fills it); without it every dispatch record is decoded."""
    seen: dict[str, CapRequest] = {}
    for o in outs:
        n = _capped(settings, o, made)
        if n is None or n.priority == "critical" or n.category in required.get(n.tenant or "", ()):
            continue
        group = capped_group(n)
        if group in seen:
            continue
        checks = cap_checks(caps, tenant=n.tenant, recipient=n.user or n.recipient,
                            channel=n.channel, category=n.category, rule_id=n.rule_id)  # fmt: skip
        if checks:
            seen[group] = CapRequest(group, checks)
    return list(seen.values())


def apply_caps(
    settings: TidingsSettings,
    outs: list[Out],
    requests: Sequence[CapRequest],
    results: Sequence[CapResult],
    now: datetime,
    made: Made | None = None,
) -> tuple[list[Out], int]:
    """`outs` with the refused notifications suppressed or parked; (outputs, refused)."""
    refused = {r.member: res for r, res in zip(requests, results, strict=True) if not res.allowed}
    if not refused:
        return outs, 0
    status_topic = settings.topics.status
    now_ms = int(now.timestamp() * 1000)
    suppressed: dict[bytes, str] = {}  # notification id → reason: its queued status changes
    kept: list[Out] = []
    for o in outs:
        n = _capped(settings, o, made)
        res = refused.get(capped_group(n)) if n is not None else None
        if n is None or res is None:
            kept.append(o)
        elif res.behaviour == "defer" and res.retry_at_ms is not None:
            kept.append(park(settings, n, o.key or b"", res.retry_at_ms, now_ms))
        else:
            reason = res.cap or "cap"
            suppressed[n.id.encode()] = reason
            # The `suppressed` status is made from the notification itself.
            kept.append(suppressed_status(status_topic, n, reason, stage="route", now=now))
    final = [o for o in kept if not (o.topic == status_topic and o.key in suppressed
                                     and _is_queued(o))]  # fmt: skip
    return final, len(refused)


def _is_queued(o: Out) -> bool:
    return any(k == "ce_type" and v == b"notification.queued" for k, v in o.headers)
