"""`POST /v1/notify`: trigger one rule for given recipients and data, over HTTP.

The Novu/Knock "trigger" for teams without event types of their own. The request is a
`Trigger` (schemas/trigger.py); it becomes one `tidings.notify` CloudEvent on
`topics.notify`, which route matches against the rule it names, through the same rules,
preferences, caps and channels as every event (docs/contracts.md#triggers). The answer is
202 once the broker acknowledged the event.

Before producing, the trigger is matched here with the live catalog: an unknown or
disabled rule, a rule not for the key's tenant, a recipient none of the rule's channels can
reach or a rule expression that fails is a 422 naming the field, not a dead letter later.

`Idempotency-Key` (any printable ASCII, at most 255 characters) is honoured for 24 h: the
same key with the same body answers the first answer again (`Idempotent-Replayed: true`),
with another body 422, while the first is still producing 409. The event id derives from
(tenant, key), so even past 24 h or with Redis away a retry is the same event and sends
nothing twice while the notifications' dedup records live (redis.dedup_ttl_s).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from catalog import CatalogError, EventError, RuleEvaluationError
from schemas.envelope import Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.settings import TidingsSettings
from schemas.trigger import NOTIFY_SOURCE, NOTIFY_TYPE, Trigger, trigger_event_id
from streams.http.callbacks_producer import AckProducer
from streams.http.gateway.auth import Key
from streams.http.gateway.problems import Problem, problem_responses
from streams.http.gateway.produce import produce_acked
from streams.runtime.records import Out
from streams.state.catalog import CatalogRef
from streams.state.idempotency import IdempotencyStore, fingerprint

__all__ = ["TriggerAccepted", "notify_router"]

_HEADERS = [("content-type", b"application/cloudevents+json")]
_MAX_KEY = 255
_ORIGIN = Origin(topic="http", partition=0, offset=0)
_PROBLEMS = problem_responses(
    400, 401, 403, 409, 413, 422, 429, 503,
    described={
        409: "a request with this Idempotency-Key is still being produced: retry",
        422: "the rule can't be matched (`pointer` names why), or the Idempotency-Key was "
        "used with another body",
        503: "Kafka is unavailable: retry with the same Idempotency-Key",
    },
)  # fmt: skip


class TriggerAccepted(BaseModel):
    """A trigger durable on the notify topic (202)."""

    id: str
    rule: str  # the rule's id, or `template:<id>` for a template trigger
    topic: str
    partition: int
    offset: int
    notifications: int  # as matched here: per address and channel, before the directory


def _check_key(key: str | None) -> None:
    if key is None:
        return
    if not 1 <= len(key) <= _MAX_KEY or not key.isprintable() or not key.isascii():
        raise Problem(
            400,
            "Invalid Idempotency-Key",
            f"the Idempotency-Key header must be 1..{_MAX_KEY} printable ASCII characters "
            "(a UUID is a good choice)",
            "Idempotency-Key",
        )


def _match(catalog: CatalogRef | None, event: dict[str, Any], trigger: Trigger) -> int:
    """How many notifications the live catalog makes of it; raises Problem 422 if none can."""
    if catalog is None:
        return 0
    mode = "rule" if trigger.rule is not None else "template"
    try:
        matches = catalog.current.trigger(event, trigger, datetime.now(UTC))
    except RuleEvaluationError as exc:  # which part of the rule failed says the field
        pointer = "/recipients" if exc.field.startswith("recipients") else f"/{mode}"
        raise Problem(422, "Trigger can't be matched", str(exc), pointer) from None
    except EventError as exc:  # no such rule or template, not this tenant's, no variant
        raise Problem(422, "Trigger can't be matched", str(exc), f"/{exc.field or mode}") from None
    except CatalogError as exc:
        raise Problem(422, "Trigger can't be matched", str(exc), f"/{mode}") from None
    if trigger.template is not None and matches:
        # A template trigger's variables are its data: render one now, so that a variable
        # the template needs and `data` lacks is this request's 422, not a failed send.
        try:
            catalog.current.render(matches[0])
        except CatalogError as exc:
            raise Problem(422, "Template can't be rendered", str(exc), "/data") from None
    return len(matches)


def notify_router(
    settings: TidingsSettings,
    producer: AckProducer,
    catalog: CatalogRef | None,
    idempotency: IdempotencyStore | None,
) -> APIRouter:
    """The `/v1/notify` route; `idempotency` None: Idempotency-Key only derives the id."""
    router = APIRouter(tags=["intake"])
    topic = settings.topics.notify

    @router.post(
        "/v1/notify",
        status_code=202,
        response_model=TriggerAccepted,
        responses=_PROBLEMS,
        summary="Trigger one rule for recipients and data",
    )
    async def notify(
        trigger: Trigger,
        key: Key,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """Produce a `tidings.notify` event for `trigger`; 202 once the broker acknowledged
        it. Scope `events:write`. With `Idempotency-Key`, a retry answers the same."""
        if not key.allows("events:write"):
            raise Problem(403, "Missing scope", "this API key lacks the events:write scope")
        _check_key(idempotency_key)
        tenant = key.tenant
        eid = trigger_event_id(tenant, idempotency_key)
        body = trigger.model_dump(mode="json")
        event = {
            "specversion": "1.0", "id": eid, "source": NOTIFY_SOURCE, "type": NOTIFY_TYPE,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "data": body,
        }  # fmt: skip
        if tenant:
            event["tenantid"] = tenant
        value = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        try:  # exactly as route will decode it (its limits: size, depth)
            env = decode_event(value, list(_HEADERS), _ORIGIN, settings.route.limits)
        except InvalidEventError as exc:
            raise Problem(400, "Invalid trigger", exc.reason, "/data") from None
        count = _match(catalog, {**env.as_cel(), "data": trigger.data}, trigger)
        fp = fingerprint(body)
        remembered = idempotency if idempotency_key is not None else None
        if remembered is not None and idempotency_key is not None:
            begun = await remembered.begin(tenant, idempotency_key, fp)
            if begun.verdict == "replay" and begun.answer is not None:
                return JSONResponse(begun.answer, 202, headers={"Idempotent-Replayed": "true"})
            if begun.verdict == "mismatch":
                raise Problem(
                    422,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used in the last 24 h with another body: use a "
                    "new key for a new request",
                    "Idempotency-Key",
                )
            if begun.verdict == "in_progress":
                raise Problem(
                    409,
                    "Request in progress",
                    "a request with this Idempotency-Key is still being produced; retry",
                    "Idempotency-Key",
                    headers={"Retry-After": "1"},
                )
        try:
            ((partition, offset),) = await produce_acked(
                producer, [Out(topic, value, eid.encode(), list(_HEADERS))],
                "retry the request with the same Idempotency-Key",
            )  # fmt: skip
        except BaseException:
            if remembered is not None and idempotency_key is not None:
                await remembered.forget(tenant, idempotency_key)
            raise
        answer = TriggerAccepted(
            id=eid, rule=trigger.rule_id, topic=topic, partition=partition, offset=offset,
            notifications=count,
        ).model_dump()  # fmt: skip
        if remembered is not None and idempotency_key is not None:
            await remembered.answer(tenant, idempotency_key, fp, answer)
        return JSONResponse(answer, 202)

    return router
