"""A notification's status history from the audit log, for the gateway (async, read-only).

`AuditHistory(conninfo)` answers `notification(tenant, id)` (every status row of one
notification, oldest first) and `page(tenant, …)` (status rows newest first, keyset-paginated
on (event_at, notification_id, status, attempt), filtered by recipient address, status and
a lower bound on the source event's time, which prunes the monthly partitions). Always
within one tenant: a row of another tenant is never read. One lazily opened connection,
queries serialised on it. Errors: Postgres unreachable → DependencyDown; the table missing
→ FatalStageError naming `tidings db migrate`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.state.pg_async import AsyncPg

__all__ = ["AuditHistory", "HistoryCursor"]

_COLUMNS = (
    "notification_id::text as notification_id, status, attempt, event_at, status_at, "
    "source_event_id, source_event_type, rule_id, channel, recipient_id, provider, "
    "provider_message_id, error_code, error_message"
)
# The keyset of a page: the last row's (event_at, notification_id, status, attempt).
HistoryCursor = tuple[datetime, str, str, int]


class AuditHistory:
    """Reads `audit_log`; use from one event loop. Nothing connects in `__init__`."""

    def __init__(self, conninfo: str, *, role: str | None = None) -> None:
        self._pg = AsyncPg(conninfo, "gateway history", role=role)

    async def notification(self, tenant: str, nid: str) -> list[dict[str, Any]]:
        """Every status row of notification `nid` of `tenant`, oldest first ([] if none)."""
        return await self._pg.rows(
            f"select {_COLUMNS} from audit_log where notification_id = %s::uuid "
            "and coalesce(tenant, '') = %s order by status_at, attempt, status",
            (nid, tenant),
            tenant=tenant,
        )

    async def page(
        self,
        tenant: str,
        *,
        since: datetime,
        limit: int,
        recipient: str | None = None,
        status: str | None = None,
        after: HistoryCursor | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` status rows of `tenant` whose event is at or after `since`, newest
        first, after the cursor `after` (the last row of the previous page) if given."""
        where = ["coalesce(tenant, '') = %s", "event_at >= %s"]
        params: list[Any] = [tenant, since]
        if recipient is not None:
            where.append("recipient_id = %s")
            params.append(recipient)
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if after is not None:
            where.append("(event_at, notification_id, status, attempt) < (%s, %s::uuid, %s, %s)")
            params.extend(after)
        params.append(limit)
        return await self._pg.rows(
            f"select {_COLUMNS} from audit_log where {' and '.join(where)} "
            "order by event_at desc, notification_id desc, status desc, attempt desc limit %s",
            params,
            tenant=tenant,
        )

    async def close(self) -> None:
        """Close the connection if open; a later call opens a new one."""
        await self._pg.close()
