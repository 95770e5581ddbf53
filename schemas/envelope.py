"""The inbound event envelope: CloudEvents 1.0 (structured or binary mode) or bare JSON.

Pure decoding, no I/O: `decode_event` turns one Kafka record into an `Envelope`
or raises `InvalidEventError` naming topic/partition/offset and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.exceptions import InvalidEventError

__all__ = ["Envelope", "Headers", "Origin", "decode_event"]

Headers = Sequence[tuple[str, bytes | None]]

_REQUIRED = ("specversion", "id", "type", "source")
_MAX_ID = 512


class Origin(BaseModel):
    """Where an event was read: enough to find it again and to name it in errors."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Envelope(BaseModel):
    """One decoded domain event, whatever form it arrived in."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    source: str
    specversion: str = "1.0"
    time: datetime | None = None
    subject: str | None = None
    tenant: str | None = None
    datacontenttype: str | None = None
    data: Any = None
    mode: str = "structured"  # structured | binary | bare
    origin: Origin

    def as_cel(self) -> dict[str, Any]:
        """The envelope as the `event` variable rules see (plain JSON types)."""
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject or "",
            "time": self.time.isoformat() if self.time else "",
            "tenant": self.tenant or "",
            "data": self.data,
        }


def _parse_time(raw: Any, where: str) -> datetime | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidEventError(
            where, f"'time' must be an RFC 3339 string, got {type(raw).__name__}"
        )
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEventError(
            where, f"'time' is not RFC 3339: {raw[:64]!r} (use e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _check_attrs(attrs: dict[str, Any], where: str) -> None:
    missing = [k for k in _REQUIRED if attrs.get(k) in (None, "")]
    if missing:
        raise InvalidEventError(
            where,
            f"CloudEvent is missing required attribute(s) {', '.join(missing)}; "
            "producers must set specversion, id, type and source",
        )
    for k in _REQUIRED:
        if not isinstance(attrs[k], str):
            raise InvalidEventError(where, f"CloudEvent attribute {k!r} must be a string")
    if attrs["specversion"] != "1.0":
        raise InvalidEventError(
            where, f"unsupported CloudEvents specversion {attrs['specversion']!r}; only 1.0 is"
        )
    if len(attrs["id"]) > _MAX_ID:
        raise InvalidEventError(where, f"CloudEvent id longer than {_MAX_ID} characters")
    tenant = attrs.get("tenantid")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidEventError(where, "extension 'tenantid' must be a string")


def _json(raw: bytes, where: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEventError(where, f"{what} is not valid JSON: {exc}") from None


def decode_event(
    value: bytes | None,
    headers: Headers | None,
    origin: Origin,
) -> Envelope:
    """Decode one Kafka record; raises InvalidEventError (dead-letter it), never blocks."""
    where = str(origin)
    hdrs: dict[str, bytes] = {}
    for k, v in headers or ():
        if v is not None:
            hdrs[k.lower()] = v
    if value is None:
        raise InvalidEventError(where, "empty record (tombstone): an event needs a body")

    if "ce_specversion" in hdrs or "ce_id" in hdrs:
        # Binary mode: attributes in ce_* headers, the body is the data.
        try:
            attrs: dict[str, Any] = {
                k[3:]: v.decode("utf-8") for k, v in hdrs.items() if k.startswith("ce_")
            }
        except UnicodeDecodeError:
            raise InvalidEventError(where, "a ce_* header is not UTF-8") from None
        _check_attrs(attrs, where)
        ctype = hdrs.get("content-type", b"application/json").decode("utf-8", "replace")
        data: Any = _json(value, where, "binary-mode body") if "json" in ctype else value
        return Envelope(
            id=attrs["id"],
            type=attrs["type"],
            source=attrs["source"],
            time=_parse_time(attrs.get("time"), where),
            subject=attrs.get("subject"),
            tenant=attrs.get("tenantid"),
            datacontenttype=ctype,
            data=data,
            mode="binary",
            origin=origin,
        )

    doc = _json(value, where, "event body")
    if isinstance(doc, dict) and "specversion" in doc:
        _check_attrs(doc, where)
        if "data_base64" in doc:
            raise InvalidEventError(where, "data_base64 is not supported; send JSON data")
        return Envelope(
            id=doc["id"],
            type=doc["type"],
            source=doc["source"],
            time=_parse_time(doc.get("time"), where),
            subject=doc.get("subject") if isinstance(doc.get("subject"), str) else None,
            tenant=doc.get("tenantid"),
            datacontenttype=doc.get("datacontenttype"),
            data=doc.get("data"),
            mode="structured",
            origin=origin,
        )
    if not isinstance(doc, dict):
        raise InvalidEventError(
            where, f"bare JSON event must be an object, got {type(doc).__name__}"
        )
    # Bare JSON: identity comes from where the record sits, the type from the topic.
    ts = datetime.fromtimestamp(origin.timestamp_ms / 1000, tz=UTC) if origin.timestamp_ms else None
    return Envelope(
        id=where,
        type=origin.topic,
        source=f"kafka:{origin.topic}",
        time=ts,
        tenant=doc.get("tenantid") if isinstance(doc.get("tenantid"), str) else None,
        data=doc,
        mode="bare",
        origin=origin,
    )
