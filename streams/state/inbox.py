"""The in-app inbox (migrations 0003, 0010) as the gateway reads and changes it (async).

`Inbox(conninfo)`: `page` (a recipient's entries newest first, keyset-paginated on
(created_at, notification_id), filtered), `counts` (unread and unseen, counted from the
rows themselves, so they can never drift from the list), `pending` (which of some entries
a change would change) and `change` (apply it; returns the ids it changed). Always one
(tenant, recipient): nothing reads another's rows. One lazily opened connection, queries
serialised on it. Errors: Postgres unreachable → DependencyDown; a table or column missing
→ FatalStageError naming `tidings db migrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from streams.state.pg_async import AsyncPg

__all__ = ["ACTIONS", "FILTERS", "Action", "Inbox", "InboxCursor", "InboxFilter"]

Action = Literal["read", "unread", "seen", "archive", "unarchive"]
ACTIONS: tuple[Action, ...] = ("read", "unread", "seen", "archive", "unarchive")
InboxFilter = Literal["all", "unread", "unseen", "archived"]
FILTERS: tuple[InboxFilter, ...] = ("all", "unread", "unseen", "archived")
InboxCursor = tuple[datetime, str]

# What each action sets, and which rows it changes (the others it leaves alone).
_SET: dict[Action, tuple[str, str]] = {
    "read": ("read_at = now(), seen_at = coalesce(seen_at, now())", "read_at is null"),
    "unread": ("read_at = null", "read_at is not null"),
    "seen": ("seen_at = now()", "seen_at is null"),
    "archive": ("archived_at = now()", "archived_at is null"),
    "unarchive": ("archived_at = null", "archived_at is not null"),
}
_FILTER: dict[InboxFilter, str] = {
    "all": "archived_at is null",
    "unread": "read_at is null and archived_at is null",
    "unseen": "seen_at is null and archived_at is null",
    "archived": "archived_at is not null",
}
_COLUMNS = (
    "notification_id, category, title, body, data, event_type, created_at, read_at, seen_at, "
    "archived_at"
)
_MINE = "recipient = %s and coalesce(tenant, '') = %s"


class Inbox:
    """The `inbox` table for the gateway; use from one event loop. Nothing connects in
    `__init__`."""

    def __init__(self, conninfo: str, *, role: str | None = None) -> None:
        self._pg = AsyncPg(conninfo, "gateway inbox", role=role)

    async def page(
        self, tenant: str, recipient: str, *, which: InboxFilter, limit: int,
        category: str | None = None, after: InboxCursor | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Up to `limit` entries, newest first, after the cursor `after` if given."""
        where = [_MINE, _FILTER[which]]
        params: list[Any] = [recipient, tenant]
        if category is not None:
            where.append("category = %s")
            params.append(category)
        if after is not None:
            where.append("(created_at, notification_id) < (%s, %s)")
            params.extend(after)
        params.append(limit)
        return await self._pg.rows(
            f"select {_COLUMNS} from inbox where {' and '.join(where)} "
            "order by created_at desc, notification_id desc limit %s",
            params,
            tenant=tenant,
        )

    async def counts(self, tenant: str, recipient: str) -> dict[str, int]:
        """{"unread": n, "unseen": m} over the entries not archived."""
        [row] = await self._pg.rows(
            "select count(*) filter (where read_at is null) as unread, "
            "count(*) filter (where seen_at is null) as unseen "
            f"from inbox where {_MINE} and archived_at is null",
            (recipient, tenant),
            tenant=tenant,
        )
        return {"unread": int(row["unread"]), "unseen": int(row["unseen"])}

    async def pending(
        self, tenant: str, recipient: str, action: Action, ids: Sequence[str] | None, limit: int
    ) -> list[str]:
        """Which of `ids` (None: all the recipient's) `action` would change, at most `limit`."""
        _, changes = _SET[action]
        where = [_MINE, changes]
        params: list[Any] = [recipient, tenant]
        if ids is not None:
            where.append("notification_id = any(%s)")
            params.append(list(ids))
        params.append(limit)
        rows = await self._pg.rows(
            f"select notification_id from inbox where {' and '.join(where)} "
            "order by created_at, notification_id limit %s",
            params,
            tenant=tenant,
        )
        return [r["notification_id"] for r in rows]

    async def change(
        self, tenant: str, recipient: str, action: Action, ids: Sequence[str]
    ) -> list[str]:
        """Apply `action` to those of `ids` it changes; returns them."""
        sets, changes = _SET[action]
        rows = await self._pg.rows(
            f"update inbox set {sets} where {_MINE} and {changes} "
            "and notification_id = any(%s) returning notification_id",
            (recipient, tenant, list(ids)),
            tenant=tenant,
        )
        return [r["notification_id"] for r in rows]

    async def close(self) -> None:
        """Close the connection if open; a later call opens a new one."""
        await self._pg.close()
