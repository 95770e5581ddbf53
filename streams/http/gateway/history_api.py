"""`/v1/notifications`: notification history from the audit log, for a tenant's backends.

- `GET /v1/notifications/{id}`: one notification's status history, oldest first;
- `GET /v1/notifications?recipient=&status=&since=&limit=&cursor=`: status changes newest
  first, cursor-paginated (the cursor is opaque; keyset underneath, so pages never skip or
  repeat a row while new ones arrive);
- `POST /v1/notifications/{id}/cancel`: 409 until scheduled sends exist (a notification is
  sent as soon as it is routed: there is nothing waiting to cancel).

Scope `events:write` or `inbox:admin` (or `admin`); always within the key's tenant. The audit
log is written by the audit stage, so a status is here once that stage has recorded it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from streams.http.gateway.auth import Key
from streams.http.gateway.keys import ApiKey
from streams.http.gateway.problems import Problem, answered, problem_responses
from streams.state.history import AuditHistory, HistoryCursor

__all__ = ["HistoryPage", "NotificationHistory", "StatusRow", "history_router"]

_DEFAULT_SINCE = timedelta(days=7)


class StatusRow(BaseModel):
    """One status change of a notification, as the audit log holds it."""

    notification_id: str
    status: str
    attempt: int
    event_at: datetime
    status_at: datetime
    source_event_id: str
    source_event_type: str
    rule_id: str
    channel: str
    recipient_id: str
    provider: str | None = None
    provider_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class NotificationHistory(BaseModel):
    """Every status of one notification, oldest first."""

    id: str
    statuses: list[StatusRow]


class HistoryPage(BaseModel):
    """One page of status changes; `next_cursor` is null on the last page."""

    items: list[StatusRow]
    next_cursor: str | None


def _need_scope(key: ApiKey) -> None:
    if not (key.allows("events:write") or key.allows("inbox:admin")):
        raise Problem(403, "Missing scope", "history needs the events:write or inbox:admin scope")


def _encode(row: StatusRow) -> str:
    doc = [row.event_at.isoformat(), row.notification_id, row.status, row.attempt]
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def _decode(cursor: str) -> HistoryCursor:
    try:
        at, nid, status, attempt = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        return datetime.fromisoformat(at), str(uuid.UUID(nid)), str(status), int(attempt)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise Problem(
            400,
            "Invalid cursor",
            f"cursor is not one this API gave ({exc}): pass next_cursor as it came",
            "/query/cursor",
        ) from None


def history_router(history: AuditHistory) -> APIRouter:
    """The routes (nothing connects here)."""
    router = APIRouter(prefix="/v1/notifications", tags=["history"],
                       responses=problem_responses(401, 403, 429, 503))  # fmt: skip

    def read(call: Awaitable[list[dict[str, Any]]]) -> Awaitable[list[dict[str, Any]]]:
        return answered(call, "Audit log")

    @router.get("/{nid}", response_model=NotificationHistory,
                responses=problem_responses(400, 404))  # fmt: skip
    async def get_notification(nid: str, key: Key) -> NotificationHistory:
        """One notification's status history, oldest first."""
        _need_scope(key)
        try:
            uuid.UUID(nid)
        except ValueError:
            raise Problem(
                400, "Invalid id", f"{nid[:64]!r} is not a notification id (a UUID)", "/path/nid"
            ) from None
        rows = await read(history.notification(key.tenant, nid))
        if not rows:
            raise Problem(
                404,
                "No such notification",
                f"tenant {key.tenant!r} has no recorded notification {nid}",
            )
        return NotificationHistory(id=nid, statuses=[StatusRow(**r) for r in rows])

    @router.get("", response_model=HistoryPage, responses=problem_responses(400))
    async def list_notifications(
        key: Key,
        recipient: Annotated[str | None, Query(max_length=4096)] = None,
        status: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> HistoryPage:
        """Status changes newest first; `since` (default: 7 days ago) bounds the source
        event's time; `recipient` is an address (an email, a phone, a device token)."""
        _need_scope(key)
        after = _decode(cursor) if cursor else None
        lower = since or datetime.now(UTC) - _DEFAULT_SINCE
        if lower.tzinfo is None:
            lower = lower.replace(tzinfo=UTC)
        rows = await read(
            history.page(
                key.tenant,
                since=lower,
                limit=limit + 1,
                recipient=recipient,
                status=status,
                after=after,
            )
        )
        items = [StatusRow(**r) for r in rows[:limit]]
        more = len(rows) > limit
        return HistoryPage(items=items, next_cursor=_encode(items[-1]) if more else None)

    @router.post(
        "/{nid}/cancel",
        status_code=202,
        responses=problem_responses(409, described={409: "not cancellable"}),
    )
    async def cancel(nid: str, key: Key) -> None:
        """Cancel a scheduled notification: 409 until scheduling exists."""
        _need_scope(key)
        raise Problem(
            409,
            "Nothing to cancel",
            "tidings sends a notification as soon as it is routed; scheduled and "
            "delayed sends (which this cancels) are not built yet",
        )

    return router
