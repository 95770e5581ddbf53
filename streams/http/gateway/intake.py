"""`POST /v1/events`: CloudEvents over HTTP → the Kafka records route reads; pure (no I/O).

`events_from_request(content_type, headers, body, tenant=, settings=)` reads the three
content modes of the CloudEvents HTTP binding:

- **structured**: `Content-Type: application/cloudevents+json`, the event as a JSON object;
- **batched**: `application/cloudevents-batch+json`, a JSON array of such objects
  (at most `gateway.max_batch`);
- **binary**: the attributes in `ce-*` headers (`ce-id`, `ce-type`, …), the body the data
  and its `Content-Type` the data's.

Each event is checked exactly as route will decode it (`schemas.envelope.decode_event`, with
`route.limits`), so the gateway accepts only what route can route, and is laid out as a
record of the domain topic named by its type (`topics.events`): structured JSON, or the
Kafka binary binding (`ce_*` headers). The record key is the event's `subject`, else its id
(one subject's events stay in order on one partition). The tenant comes from the API key:
an event naming another tenant is refused (403); one naming none is stamped with the key's.
Raises Problem (problems.py) naming the event and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.envelope import Origin, decode_event
from schemas.exceptions import InvalidEventError
from schemas.settings import TidingsSettings
from streams.http.gateway.problems import Problem

__all__ = ["BATCH", "STRUCTURED", "Accepted", "events_from_request"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_ORIGIN = Origin(topic="http", partition=0, offset=0)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One event laid out as its Kafka record."""

    id: str
    type: str
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def events_from_request(
    content_type: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tenant: str,
    settings: TidingsSettings,
) -> list[Accepted]:
    """The events of one request, in order; raises Problem (400, 403, 413, 422) for the
    first one that can't be accepted: nothing of the request is then produced."""
    media = _media(content_type)
    ce = {k.lower()[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")}
    # Binary mode exactly when route will read it so (schemas.envelope.decode_event).
    if "specversion" in ce or "id" in ce:
        return [_binary(ce, media or "application/json", body, tenant, settings)]
    if ce:
        raise Problem(
            400,
            "Incomplete binary mode",
            f"ce-{sorted(ce)[0]} without ce-specversion and ce-id: send all of "
            "ce-specversion, ce-id, ce-type, ce-source, or a structured event",
            "ce-",
        )
    if media == BATCH:
        docs = _parse(body, "the batch")
        if not isinstance(docs, list):
            raise Problem(400, "Not a batch", f"{BATCH} must be a JSON array of events", "/")
        if len(docs) > settings.gateway.max_batch:
            raise Problem(
                413,
                "Batch too large",
                f"{len(docs)} events in one batch, more than gateway.max_batch = "
                f"{settings.gateway.max_batch}; split it",
                "/",
            )
        return [_structured(d, f"/{i}", tenant, settings) for i, d in enumerate(docs)]
    if media in (STRUCTURED, "application/json"):
        return [_structured(_parse(body, "the event"), "/", tenant, settings)]
    raise Problem(
        415,
        "Unsupported media type",
        f"Content-Type {content_type or '(none)'!r}: send {STRUCTURED}, {BATCH}, "
        "or the binary mode (ce-specversion, ce-id, ce-type, ce-source headers)",
    )


def _parse(body: bytes, what: str) -> Any:
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(400, "Invalid JSON", f"{what} is not UTF-8 JSON: {exc}", "/") from None


def _own_tenant(named: Any, tenant: str, pointer: str) -> None:
    if named not in (None, "", tenant):
        raise Problem(
            403,
            "Another tenant",
            f"the event names tenant {str(named)[:64]!r}, but this API key is "
            f"tenant {tenant!r}'s: use that tenant's key",
            f"{pointer}tenantid",
        )


def _topic(event_type: str, pointer: str, settings: TidingsSettings) -> str:
    if event_type not in settings.topics.events:
        raise Problem(
            422,
            "Unknown event type",
            f"type {event_type[:128]!r} has no domain topic here: topics.events lists "
            f"{', '.join(settings.topics.events)}",
            f"{pointer}type",
        )
    return event_type


def _check(
    value: bytes, headers: list[tuple[str, bytes]], pointer: str, settings: TidingsSettings
) -> None:
    try:
        decode_event(value, list(headers), _ORIGIN, settings.route.limits)
    except InvalidEventError as exc:
        raise Problem(400, "Invalid CloudEvent", exc.reason, pointer) from None


def _structured(doc: Any, pointer: str, tenant: str, settings: TidingsSettings) -> Accepted:
    sep = "" if pointer.endswith("/") else "/"
    if not isinstance(doc, dict) or "specversion" not in doc:
        raise Problem(
            400,
            "Not a CloudEvent",
            "a structured event is a JSON object with specversion, id, type and source",
            pointer,
        )
    _own_tenant(doc.get("tenantid"), tenant, pointer + sep)
    if tenant:
        doc = {**doc, "tenantid": tenant}
    value = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [("content-type", STRUCTURED.encode())]
    _check(value, headers, pointer, settings)
    topic = _topic(str(doc["type"]), pointer + sep, settings)
    subject = doc.get("subject")
    key = subject if isinstance(subject, str) and subject else doc["id"]
    return Accepted(doc["id"], doc["type"], topic, str(key).encode(), value, tuple(headers))


def _binary(
    ce: dict[str, str], media: str, body: bytes, tenant: str, settings: TidingsSettings
) -> Accepted:
    _own_tenant(ce.get("tenantid"), tenant, "ce-")
    if tenant:
        ce = {**ce, "tenantid": tenant}
    headers = [(f"ce_{k}", v.encode()) for k, v in ce.items()]
    headers.append(("content-type", media.encode()))
    _check(body, headers, "ce-", settings)
    topic = _topic(ce.get("type", ""), "ce-", settings)
    key = ce.get("subject") or ce["id"]
    return Accepted(ce["id"], ce["type"], topic, key.encode(), body, tuple(headers))
