"""Postgres `deliveries`: the durable record of every accepted send, group-committed.

It is the backstop of the Redis claims (`streams.state.claims`): a redelivery that finds
Redis empty still finds the row and doesn't send again. The row also keeps the dispatch
record itself (`Notification` JSON), so a provider receipt (e.g. a Twilio status callback)
can be turned into a complete status event by notification id alone (`DeliveryLog.delivery`).

Postgres unreachable raises `DependencyDown` (the caller keeps the work and retries); a login
Postgres refuses (wrong credentials, no such database) raises `FatalStageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from streams.exceptions import DependencyDown, FatalStageError
from streams.state.db import check_login

__all__ = ["LOOKUP_TIMEOUT_S", "Delivery", "DeliveryLog", "SentRecord"]

log = logging.getLogger(__name__)

# Longest a receipt's lookup of its delivery may take before the caller is told to retry.
LOOKUP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SentRecord:
    """What is known of an accepted send."""

    provider: str
    provider_message_id: str | None
    attempt: int


@dataclass(frozen=True)
class Delivery:
    """One row of `deliveries`: an accepted send and the dispatch record it carried."""

    channel: str
    sent: SentRecord
    # `Notification.encode()` bytes; None for rows written before migration 0004.
    notification: bytes | None


class DeliveryLog:
    """Postgres `deliveries`: the durable backstop. Writes are group-committed."""

    def __init__(self, conninfo: str, max_batch: int = 500) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._max_batch = max_batch

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                check_login(exc, "deliveries")  # wrong credentials: FatalStageError, no retry
                raise DependencyDown(
                    "postgres", f"deliveries: Postgres unreachable: {exc}"
                ) from exc
        return self._conn

    async def _rows(self, sql: str, params: tuple[Any, ...], what: str) -> list[tuple[Any, ...]]:
        """Run one lookup, bounded (a hung connection must not stall every caller behind the
        lock); raises DependencyDown naming `what` when Postgres is gone or the query fails,
        FatalStageError when it refuses the login (`streams.state.db.check_login`)."""
        async with self._lock:
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                    conn = await self._connection()
                    cur = await conn.execute(sql, params)
                    return list(await cur.fetchall())
            except (psycopg.Error, TimeoutError, DependencyDown) as exc:
                await self._drop()
                raise DependencyDown(
                    "postgres", f"{what} failed ({exc!r}); is Postgres up? (`tidings doctor`)"
                ) from exc

    async def sent(self, ids: list[str]) -> dict[str, SentRecord]:
        """Which of `ids` were sent already; raises DependencyDown if Postgres is gone.

        Raises FatalStageError when Postgres refuses the login (a setting to fix).
        """
        if not ids:
            return {}
        rows = await self._rows(
            "select notification_id::text, provider, provider_message_id, attempt "
            "from deliveries where notification_id = any(%b::uuid[])",
            (ids,),
            "deliveries lookup",
        )
        return {r[0]: SentRecord(r[1], r[2], r[3]) for r in rows}

    async def dispatch_records(self, ids: list[str]) -> dict[str, bytes]:
        """The dispatch records (`Notification.encode()` bytes) kept with the sends of
        `ids`, in ONE round trip; ids without one (not sent, or sent before migration 0004)
        are absent. Raises DependencyDown, FatalStageError as `sent` does."""
        if not ids:
            return {}
        rows = await self._rows(
            "select notification_id::text, notification from deliveries "
            "where notification_id = any(%b::uuid[]) and notification is not null",
            (ids,),
            "deliveries lookup",
        )
        return {r[0]: bytes(r[1]) for r in rows}

    async def delivery(self, nid: str) -> Delivery | None:
        """The recorded send of notification `nid` (a UUID), or None if none is recorded.

        Raises DependencyDown when Postgres is unreachable or the query fails, FatalStageError
        when it refuses the login.
        """
        rows = await self._rows(
            "select channel, provider, provider_message_id, attempt, notification "
            "from deliveries where notification_id = %s::uuid",
            (nid,),
            f"deliveries lookup of {nid}",
        )
        if not rows:
            return None
        row = rows[0]
        return Delivery(row[0], SentRecord(row[1], row[2], row[3]), row[4])

    async def record(
        self, nid: str, channel: str, rec: SentRecord, *, notification: bytes | None = None
    ) -> None:
        """Durably record an accepted send; returns once committed. Raises DependencyDown
        (FatalStageError when Postgres refuses the login).

        `notification` is the raw dispatch record (`Notification.encode()`), kept so provider
        receipts can be enriched later; None stores NULL. Idempotent: call it again after a
        failure.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(
            ((nid, channel, rec.provider, rec.provider_message_id, rec.attempt, notification), fut)
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def _flush(self) -> None:
        # Group commit: every send that finished while the last insert ran rides the next one.
        while self._pending:
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            cols = list(zip(*(row for row, _ in batch), strict=True))
            # %b: the arrays go in binary, without psycopg's per-element text quoting (the
            # notification column is ~1 KB a row): half the client CPU of the insert.
            try:
                async with self._lock, asyncio.timeout(LOOKUP_TIMEOUT_S * 2):
                    conn = await self._connection()
                    await conn.execute(
                        "insert into deliveries "
                        "(notification_id, channel, provider, provider_message_id, attempt, "
                        "notification) "
                        "select * from unnest(%b::uuid[], %b::text[], %b::text[], %b::text[], "
                        "%b::int[], %b::bytea[]) on conflict (notification_id) do nothing",
                        [list(c) for c in cols],
                    )
            except (psycopg.Error, DependencyDown, FatalStageError, TimeoutError) as exc:
                await self._drop()
                err = (
                    exc
                    if isinstance(exc, DependencyDown | FatalStageError)
                    else DependencyDown("postgres", f"recording sends in Postgres failed: {exc!r}")
                )
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _drop(self) -> None:
        # Forget a connection in an unknown state; the next call connects afresh.
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                await conn.close()

    async def close(self) -> None:
        """Close the connection (pending writes finish first)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._drop()
