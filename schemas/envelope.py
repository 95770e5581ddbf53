"""The inbound event envelope: CloudEvents 1.0 (structured or binary mode) or bare JSON.

Pure decoding, no I/O: `decode_event` turns one Kafka record into an `Envelope`
or raises `InvalidEventError` naming topic/partition/offset and the reason. It is
bounded (`DecodeLimits`: bytes, nesting depth, values, string length), so no
record, however built, makes it raise anything else, recurse or run long.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas import bounded_json
from schemas.bounded_json import LimitExceeded
from schemas.exceptions import InvalidEventError
from schemas.settings import DecodeLimits

__all__ = ["Envelope", "Headers", "Origin", "decode_event"]

Headers = Sequence[tuple[str, bytes | None]]

_REQUIRED = ("specversion", "id", "type", "source")
_MAX_ID = 512
_DEFAULT_LIMITS = DecodeLimits()


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


def _refused(where: str, what: str, exc: LimitExceeded) -> InvalidEventError:
    if exc.value is None:  # a rule of JSON or of what tidings can carry, not a setting
        return InvalidEventError(where, f"{what} {exc.detail}")
    return InvalidEventError(
        where,
        f"{what} {exc.detail} (limit route.limits.{exc.limit} = {exc.value}); reshape the event "
        f"to fit, or raise TIDINGS_ROUTE__LIMITS__{exc.limit.upper()}",
    )


def _json(raw: bytes, where: str, what: str, limits: DecodeLimits) -> Any:
    try:
        # Strict UTF-8 (RFC 8259 §8.1): json.loads(bytes) would also guess UTF-16/32,
        # where a '"' or '[' byte can sit inside another character and fool the depth scan.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(
            where, f"{what} is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON"
        ) from None
    try:
        return bounded_json.loads(
            text,
            max_depth=limits.max_depth,
            max_values=limits.max_values,
            max_string_length=limits.max_string_length,
        )
    except LimitExceeded as exc:
        raise _refused(where, what, exc) from None
    except json.JSONDecodeError as exc:
        raise InvalidEventError(where, f"{what} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # not expected past the checks; still one record
        raise InvalidEventError(where, f"{what} can't be parsed: {exc}") from None


def _check_size(value: bytes, headers: Headers, where: str, limits: DecodeLimits) -> None:
    size = len(value) + sum(len(k) + len(v or b"") for k, v in headers)
    if size > limits.max_bytes:
        detail = f"is {size} bytes (value plus headers), more than {limits.max_bytes}"
        raise _refused(where, "record", LimitExceeded("max_bytes", limits.max_bytes, detail))


def _envelope(where: str, **fields: Any) -> Envelope:
    try:
        return Envelope(**fields)
    except ValidationError as exc:  # e.g. a non-string datacontenttype
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise InvalidEventError(where, f"CloudEvent attribute {name!r}: {err['msg']}") from None


def decode_event(
    value: bytes | None,
    headers: Headers | None,
    origin: Origin,
    limits: DecodeLimits | None = None,
) -> Envelope:
    """Decode one Kafka record; raises InvalidEventError (dead-letter it), never blocks.

    `limits` defaults to `DecodeLimits()`; nothing else escapes, whatever the bytes.
    """
    where = str(origin)
    lim = limits or _DEFAULT_LIMITS
    if value is None:
        raise InvalidEventError(where, "empty record (tombstone): an event needs a body")
    _check_size(value, headers or (), where, lim)
    hdrs: dict[str, bytes] = {}
    for k, v in headers or ():
        if v is not None:
            hdrs[k.lower()] = v

    if "ce_specversion" in hdrs or "ce_id" in hdrs:
        # Binary mode: attributes in ce_* headers, the body is the data.
        try:
            attrs: dict[str, Any] = {
                k[3:]: v.decode("utf-8") for k, v in hdrs.items() if k.startswith("ce_")
            }
        except UnicodeDecodeError:
            raise InvalidEventError(where, "a ce_* header is not UTF-8") from None
        for k, v in attrs.items():
            if len(v) > lim.max_string_length:
                detail = f"header ce_{k} is {len(v)} characters, more than {lim.max_string_length}"
                raise _refused(
                    where,
                    "record",
                    LimitExceeded("max_string_length", lim.max_string_length, detail),
                )
        _check_attrs(attrs, where)
        ctype = hdrs.get("content-type", b"application/json").decode("utf-8", "replace")
        data: Any = _json(value, where, "binary-mode body", lim) if "json" in ctype else value
        return _envelope(
            where,
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

    doc = _json(value, where, "event body", lim)
    if isinstance(doc, dict) and "specversion" in doc:
        _check_attrs(doc, where)
        if "data_base64" in doc:
            raise InvalidEventError(where, "data_base64 is not supported; send JSON data")
        return _envelope(
            where,
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
    return _envelope(
        where,
        id=where,
        type=origin.topic,
        source=f"kafka:{origin.topic}",
        time=ts,
        tenant=doc.get("tenantid") if isinstance(doc.get("tenantid"), str) else None,
        data=doc,
        mode="bare",
        origin=origin,
    )
