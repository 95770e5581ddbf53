"""`/v1/inbox`: a recipient's in-app inbox, for the recipient's own app.

Authenticated as the recipient by a recipient token (tokens.py): every route reads and
changes only that (tenant, recipient)'s entries. Counts are counted from the rows, so they
equal the list whatever changed concurrently. Marking an entry `read`, `seen` or `archived`
produces that status event on `notification.status` (source `tidings/gateway`, built from
the dispatch record kept with the send, deterministic id) before the row changes, so the
audit log and the status consumers see engagement; a retried request produces the same
event ids (consumers and the audit log dedup by id). `unread` and `unarchive` change the row
only (there is no such status).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ValidationError

from schemas.notification import Notification
from schemas.settings import TidingsSettings
from schemas.status import Status, build_status
from streams.http.callbacks_producer import AckProducer
from streams.http.gateway.problems import Problem, answered, problem_responses
from streams.http.gateway.produce import produce_acked
from streams.http.gateway.tokens import RecipientIdentity, verify_recipient_token
from streams.runtime.records import Out
from streams.state.deliveries import DeliveryLog
from streams.state.inbox import Action, Inbox, InboxCursor, InboxFilter

__all__ = [
    "BULK_MAX",
    "InboxActions",
    "InboxChanged",
    "InboxCounts",
    "InboxEntry",
    "InboxPage",
    "inbox_entry",
    "inbox_router",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

BULK_MAX = 1000  # entries one bulk change touches at most ("more" says when to call again)
_STATUS: dict[Action, Status] = {"read": "read", "seen": "seen", "archive": "archived"}


class InboxEntry(BaseModel):
    """One in-app notification as its recipient sees it."""

    id: str
    category: str | None
    title: str
    body: str
    data: dict[str, Any]
    event_type: str
    created_at: datetime
    read_at: datetime | None
    seen_at: datetime | None
    archived_at: datetime | None


class InboxPage(BaseModel):
    items: list[InboxEntry]
    next_cursor: str | None


class InboxCounts(BaseModel):
    unread: int
    unseen: int


class InboxChanged(BaseModel):
    """The entries a change changed (the others already were so); `more`: a bulk change
    stopped at BULK_MAX, call again."""

    changed: list[str]
    more: bool = False


async def recipient_auth(request: Request) -> RecipientIdentity:
    """The recipient a request's token proves (`Authorization: Bearer <token>`)."""
    settings: TidingsSettings = request.app.state.settings
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise Problem(
            401,
            "No recipient token",
            "send `Authorization: Bearer <recipient token>` signed by your backend (docs/api.md)",
            headers={"WWW-Authenticate": 'Bearer realm="inbox"'},
        )
    return verify_recipient_token(settings.gateway, auth[7:].strip())


Me = Annotated[RecipientIdentity, Depends(recipient_auth)]


def _cursor(entry: InboxEntry) -> str:
    raw = json.dumps([entry.created_at.isoformat(), entry.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> InboxCursor:
    try:
        at, nid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(nid)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise Problem(
            400, "Invalid cursor", f"not a cursor this API gave ({exc})", "/query/cursor"
        ) from None


def inbox_entry(row: dict[str, Any]) -> InboxEntry:
    """An inbox row (Inbox.page) as the API shows it."""
    return InboxEntry(
        id=row["notification_id"], **{k: v for k, v in row.items() if k != "notification_id"}
    )


def _pg(call: Awaitable[T]) -> Awaitable[T]:
    return answered(call, "Inbox")


class InboxActions:
    """Marking a recipient's entries: the status events first, then the rows (module
    docstring). Shared by the HTTP routes and the Socket.IO handlers (realtime.py)."""

    def __init__(
        self,
        settings: TidingsSettings,
        producer: AckProducer,
        inbox: Inbox,
        deliveries: DeliveryLog,
    ) -> None:
        self.inbox = inbox
        self._producer = producer
        self._deliveries = deliveries
        self._status_topic = settings.topics.status

    async def _statuses(self, action: Action, ids: list[str]) -> None:
        status = _STATUS.get(action)
        if status is None or not ids:
            return
        records = await _pg(self._deliveries.dispatch_records(ids))
        outs = []
        for nid in ids:
            raw = records.get(nid)
            if raw is None:
                log.warning(
                    "gateway: inbox %s of %s: no dispatch record kept, no status", action, nid
                )
                continue
            try:
                n = Notification.decode(raw)
            except ValidationError as exc:
                log.error("gateway: the dispatch record of %s is unreadable: %s", nid, exc)
                continue
            st = build_status(n, status, stage="gateway")
            outs.append(Out(self._status_topic, st.encode(), st.key(), st.headers()))
        await produce_acked(self._producer, outs, "nothing was changed: retry")

    async def apply(
        self, me: RecipientIdentity, action: Action, ids: list[str] | None
    ) -> InboxChanged:
        """Apply `action` to `ids` (None: all) of `me`; raises Problem 503 (nothing changed)."""
        todo = await _pg(self.inbox.pending(me.tenant, me.recipient, action, ids, BULK_MAX + 1))
        more = len(todo) > BULK_MAX
        todo = todo[:BULK_MAX]
        if action == "read":  # read implies seen: an entry never seen gets its `seen` too
            unseen = await _pg(self.inbox.pending(me.tenant, me.recipient, "seen", todo, BULK_MAX))
            await self._statuses("seen", unseen)
        await self._statuses(action, todo)  # first: a failure here leaves the rows as they were
        changed = await _pg(self.inbox.change(me.tenant, me.recipient, action, todo))
        return InboxChanged(changed=changed, more=more)

    async def close(self) -> None:
        """Close the inbox's and the delivery log's connections."""
        await self.inbox.close()
        await self._deliveries.close()


def inbox_router(actions: InboxActions) -> APIRouter:
    """The routes (nothing connects here)."""
    router = APIRouter(
        prefix="/v1/inbox",
        tags=["inbox"],
        responses=problem_responses(
            401, 503, described={401: "no recipient token, or not a valid one"}
        ),
    )
    inbox, apply, pg = actions.inbox, actions.apply, _pg

    @router.get("", response_model=InboxPage, responses=problem_responses(400))
    async def list_inbox(
        me: Me,
        filter: InboxFilter = "all",
        category: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> InboxPage:
        """The recipient's entries, newest first (`all` leaves archived ones out)."""
        rows = await pg(
            inbox.page(
                me.tenant,
                me.recipient,
                which=filter,
                limit=limit + 1,
                category=category,
                after=_after(cursor) if cursor else None,
            )
        )
        items = [inbox_entry(r) for r in rows[:limit]]
        return InboxPage(items=items, next_cursor=_cursor(items[-1]) if len(rows) > limit else None)

    @router.get("/counts", response_model=InboxCounts)
    async def counts(me: Me) -> InboxCounts:
        """Unread and unseen entries (archived ones not counted)."""
        return InboxCounts(**await pg(inbox.counts(me.tenant, me.recipient)))

    @router.post("/{nid}/{action}", response_model=InboxChanged,
                 responses=problem_responses(400))  # fmt: skip
    async def mark_one(nid: str, action: Action, me: Me) -> InboxChanged:
        """Mark one entry read, unread, seen, archived (`archive`) or not (`unarchive`)."""
        return await apply(me, action, [nid])

    @router.post("/{action}", response_model=InboxChanged,
                 responses=problem_responses(400, 413))  # fmt: skip
    async def mark_many(
        action: Action,
        me: Me,
        body: Annotated[dict[Literal["ids", "all"], Any], Body()],
    ) -> InboxChanged:
        """Mark many: `{"ids": [...]}`, or `{"all": true}` ("mark all read"); at most
        BULK_MAX per call."""
        if body.get("all") is True:
            return await apply(me, action, None)
        ids = body.get("ids")
        if (
            not isinstance(ids, list)
            or not all(isinstance(i, str) for i in ids)
            or len(ids) > BULK_MAX
        ):
            raise Problem(
                400,
                "Invalid body",
                f'send {{"ids": [up to {BULK_MAX} ids]}} or {{"all": true}}',
                "/ids",
            )
        return await apply(me, action, ids)

    return router
