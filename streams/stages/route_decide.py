"""What one domain event becomes: the route stage's decision, pure, in two steps.

`plan_record` decodes the record and evaluates the catalog's rules: the dead letter or the
`unmatched` outcome right away, or a `Planned` with the matches. `finish_record` turns a
plan into output records, given what the recipient directory knows of its `- user:`
recipients (`Planned.directory_keys()`: route fetches them for a whole batch in one round
trip). `route_record` is both steps for one record with the directory given.

Never raises but MemoryError: a failure while deciding (a bug, a shape decoding let
through) dead-letters the record with reason `internal_error`, so one record can't stop
the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from catalog import Catalog, CatalogError, EventError, Match
from schemas import codes
from schemas.envelope import Envelope, Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.notification import PER_ADDRESS, Notification, notification_id
from schemas.recipient import Preferences, Recipient
from schemas.settings import TidingsSettings
from schemas.status import build_status
from schemas.trigger import NOTIFY_TYPE, Trigger
from streams.exceptions import StreamsError
from streams.runtime.dead_letter import INTERNAL_ERROR, dead_letter
from streams.runtime.records import Out
from streams.stages.deliver_outputs import park, suppressed_status
from streams.stages.resolve import Resolution, resolve

__all__ = [
    "DirectoryView",
    "Outcome",
    "Planned",
    "TenantPrefs",
    "UnknownEventType",
    "finish_record",
    "plan_record",
    "route_record",
]

log = logging.getLogger(__name__)

Outcome = tuple[list[Out], str]
# (tenant, id) → the directory's record; tenant → (defaults, required categories).
DirectoryView = Mapping[tuple[str, str], Recipient]
TenantPrefs = Mapping[str, tuple[Preferences, Collection[str]]]


class UnknownEventType(StreamsError):
    """No rule of the catalog listens to this event type."""


@dataclass(frozen=True, slots=True)
class Planned:
    """A decoded event and the rules' matches, waiting for the directory."""

    origin: Origin
    env: Envelope
    event: dict[str, Any]  # env.as_cel(): what the rules saw, and `recipient_when` sees again
    matches: tuple[Match, ...]
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]]

    def directory_keys(self) -> set[tuple[str, str]]:
        """The (tenant, id) of every `- user:` recipient of the matches."""
        return {(m.tenant or "", m.recipient) for m in self.matches if m.directory}


def _dead(
    settings: TidingsSettings,
    origin: Origin,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> Callable[[BaseException, str], Outcome]:
    def dlq(exc: BaseException, reason: str) -> Outcome:
        return [
            dead_letter(
                settings.topics.dlq, topic=origin.topic, partition=origin.partition,
                offset=origin.offset, timestamp_ms=origin.timestamp_ms, key=key, value=value,
                headers=headers, error=exc, stage="route", reason=reason,
            )
        ], "dlq"  # fmt: skip

    return dlq


def _guard(origin: Origin, dlq: Callable[[BaseException, str], Outcome], exc: Exception) -> Outcome:
    log.error(
        "route: %s: unexpected %s; dead-lettered", origin, type(exc).__name__, exc_info=exc,
        extra={"stage": "route", "topic": origin.topic, "partition": origin.partition,
               "offset": origin.offset},
    )  # fmt: skip
    return dlq(exc, INTERNAL_ERROR)


def plan_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    catalog: Catalog,
    settings: TidingsSettings,
    now: datetime,
) -> Planned | Outcome:
    """Decode and match one record: a `Planned`, or (outputs, outcome) already decided."""
    origin = Origin(topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms)
    dlq = _dead(settings, origin, key, value, headers)
    try:
        try:
            env = decode_event(value, headers, origin, settings.route.limits)
        except InvalidEventError as exc:
            return dlq(exc, codes.INVALID_EVENT)
        if env.type == NOTIFY_TYPE:
            return _plan_trigger(origin, env, dlq, catalog, now, key, value, headers)
        if not catalog.rules_for(env.type):
            if settings.route.unknown_types == "skip":
                return [], "unmatched"
            return dlq(
                UnknownEventType(
                    f"{origin}: no rule of catalog {catalog.version} listens to event type "
                    f"{env.type!r}; add a rule for it, or set TIDINGS_ROUTE__UNKNOWN_TYPES=skip"
                ),
                codes.UNKNOWN_TYPE,
            )
        event = env.as_cel()
        try:
            matches = catalog.evaluate(event, now)
        except CatalogError as exc:
            return dlq(exc, codes.RULE_ERROR)
        if not matches:
            return [], "unmatched"
        return Planned(origin, env, event, tuple(matches), key, value, headers)
    except MemoryError:
        raise
    except Exception as exc:
        return _guard(origin, dlq, exc)


def _plan_trigger(
    origin: Origin,
    env: Envelope,
    dlq: Callable[[BaseException, str], Outcome],
    catalog: Catalog,
    now: datetime,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> Planned | Outcome:
    """A `tidings.notify` event: the one rule it names, over the trigger's data."""
    try:
        trigger = Trigger.model_validate(env.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(["data", *(str(p) for p in err["loc"])])
        return dlq(
            InvalidEventError(
                str(origin), f"a {NOTIFY_TYPE} event's data is not a trigger: {where}: "
                f"{err['msg']} (docs/contracts.md#triggers)",
            ),
            codes.INVALID_TRIGGER,
        )  # fmt: skip
    # What the rule sees: the trigger's data as `event.data` (and the same in recipient_when).
    event = {**env.as_cel(), "data": trigger.data}
    try:
        matches = catalog.trigger(event, trigger, now)
    except EventError as exc:
        return dlq(InvalidEventError(str(origin), str(exc)), codes.INVALID_TRIGGER)
    except CatalogError as exc:
        return dlq(exc, codes.RULE_ERROR)
    if not matches:
        return [], "unmatched"
    return Planned(origin, env, event, tuple(matches), key, value, headers)


def finish_record(
    p: Planned,
    *,
    catalog: Catalog,
    settings: TidingsSettings,
    now: datetime,
    directory: DirectoryView,
    tenants: TenantPrefs,
    made: dict[bytes, Notification] | None = None,
    online: Collection[tuple[str, str]] = frozenset(),
) -> Outcome:
    """The outputs of a planned record, with the directory's records of its recipients.

    `online`: the (tenant, id) of those with a live connection (`recipient.online`).
    `made`, when given, gets each directory notification sent now, by its encoded dispatch
    record (what the caps pass reads instead of decoding the records again)."""
    dlq = _dead(settings, p.origin, p.key, p.value, p.headers)
    try:
        return _finish(p, catalog, settings, now, directory, tenants, made, online)
    except CatalogError as exc:  # a recipient_when or recipient variable failed
        return dlq(exc, codes.RULE_ERROR)
    except MemoryError:
        raise
    except Exception as exc:
        return _guard(p.origin, dlq, exc)


def route_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    catalog: Catalog,
    settings: TidingsSettings,
    now: datetime,
    directory: DirectoryView | None = None,
    tenants: TenantPrefs | None = None,
    online: Collection[tuple[str, str]] = frozenset(),
) -> Outcome:
    """Decide what one record becomes; returns (outputs, outcome). Pure: never raises, never
    blocks. Outcome is `routed`, `unmatched` (rules listen, none matched) or `dlq`."""
    planned = plan_record(
        topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms, key=key,
        value=value, headers=headers, catalog=catalog, settings=settings, now=now,
    )  # fmt: skip
    if not isinstance(planned, Planned):
        return planned
    return finish_record(planned, catalog=catalog, settings=settings, now=now,
                         directory=directory or {}, tenants=tenants or {},
                         online=online)  # fmt: skip


def _notification(
    env: Envelope, m: Match, catalog: Catalog, timestamp_ms: int | None, *,
    address: str | None = None, bypassed: str | None = None, routed_ms: int | None = None,
) -> Notification:  # fmt: skip
    user = m.recipient if m.directory else None
    ident = m.recipient
    if m.directory and address is not None and m.channel in PER_ADDRESS:
        ident = f"{m.recipient}\x1f{address}"  # one id per device, stable across events
    return Notification(
        id=notification_id(env.source, env.id, m.rule_id, ident, m.channel),
        event_id=env.id, event_source=env.source, event_type=env.type, tenant=env.tenant,
        rule_id=m.rule_id, rule_version=m.rule_version, template_id=m.template_id,
        template_version=m.template_version, catalog_version=catalog.version,
        channel=m.channel, recipient=address if address is not None else m.recipient,
        priority=m.priority, category=m.category, variables=m.variables,
        locale=m.locale or None, event_time_ms=timestamp_ms, user=user, bypassed=bypassed,
        routed_ms=routed_ms,
    )  # fmt: skip


def _finish(
    p: Planned, catalog: Catalog, settings: TidingsSettings, now: datetime,
    directory: DirectoryView, tenants: TenantPrefs, made: dict[bytes, Notification] | None,
    online: Collection[tuple[str, str]],
) -> Outcome:  # fmt: skip
    t = settings.topics
    outs: list[Out] = []
    ts = p.origin.timestamp_ms

    def queue(n: Notification, hold_ms: int | None = None, bypassed: str | None = None) -> None:
        # Keyed by recipient (the user for a directory recipient): one recipient's
        # notifications stay in order on one partition.
        key = (n.user or n.recipient).encode()
        if hold_ms is None:
            value = n.encode()
            outs.append(Out(t.dispatch(n.channel), value, key))
            if made is not None and n.user is not None:
                made[value] = n
        else:
            outs.append(park(settings, n, key, hold_ms, int(now.timestamp() * 1000)))
        st = build_status(n, "queued", stage="route", now=now,
                          extra={"bypassed": bypassed} if bypassed else None)  # fmt: skip
        outs.append(Out(t.status, st.encode(), st.key(), st.headers()))

    for m in p.matches:
        if not m.directory:
            queue(_notification(p.env, m, catalog, ts))
            continue
        tenant = m.tenant or ""
        defaults, required = tenants.get(tenant, (None, ()))
        known = directory.get((tenant, m.recipient))
        res = resolve(m, known, catalog=catalog, envelope=p.event, defaults=defaults,
                      required_categories=required, now=now,
                      online=(tenant, m.recipient) in online)  # fmt: skip
        if res is None:
            continue  # recipient_when: not for this recipient
        # A recipient the directory knows is checked again by deliver if it changes meanwhile.
        routed_ms = int(now.timestamp() * 1000) if known is not None else None
        _emit(p, res, catalog, ts, queue, outs, t.status, now, routed_ms)
    return outs, ("routed" if outs else "unmatched")


def _emit(
    p: Planned, res: Resolution, catalog: Catalog, ts: int | None,
    queue: Callable[..., None], outs: list[Out], status_topic: str, now: datetime,
    routed_ms: int | None,
) -> None:  # fmt: skip
    if res.suppressed is not None:
        n = _notification(p.env, res.match, catalog, ts)
        outs.append(suppressed_status(status_topic, n, res.suppressed, stage="route", now=now))
        return
    hold_ms = int(res.hold_until.timestamp() * 1000) if res.hold_until is not None else None
    for address in res.addresses:
        n = _notification(p.env, res.match, catalog, ts, address=address,
                          bypassed=res.bypassed, routed_ms=routed_ms)  # fmt: skip
        queue(n, hold_ms, res.bypassed)
