"""In-app: store the notification in the Postgres inbox, then publish it on Redis.

Postgres is the record (the gateway lists the inbox from it); Redis pub/sub only wakes the
gateway processes that hold the recipient's WebSocket, so a lost publish costs latency, never a
message. The insert is idempotent on the notification id (`ON CONFLICT DO NOTHING`): a retry or a
replay stores nothing twice, and publishes again (the gateway dedups by id).
Channel: `{prefix}{tenant or '-'}:{recipient}`; message: JSON of the stored row.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from processors.coalesce import Coalescer
from processors.exceptions import PermanentSendError, RetryableSendError
from processors.provider import expect_content
from processors.redis_pack import fast_pool
from schemas.content import Content, InAppContent
from schemas.notification import Notification

__all__ = ["DEFAULT_TABLE", "InAppProvider"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = "inbox"
DEFAULT_CHANNEL_PREFIX = "tidings:inbox:"


_Row = tuple[str, str | None, str, str | None, str, str, str, str]


def _published(nid: str, fut: asyncio.Future[bool]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is None:
        return
    if not isinstance(exc, aioredis.RedisError | OSError):
        log.error("inbox %s: publishing on Redis failed unexpectedly", nid, exc_info=exc)
        return
    log.warning(
        "inbox %s stored but not published on Redis (%r): live clients see it on their "
        "next inbox read; check Redis",
        nid,
        exc,
    )


class InAppProvider:
    """Writes inbox rows and wakes the gateway; one connection, the sends of one moment
    batched into one INSERT and one PUBLISH pipeline."""

    channel = "inapp"

    def __init__(
        self,
        *,
        conninfo: str,
        redis_url: str,
        name: str = "inbox",
        table: str = DEFAULT_TABLE,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self._conninfo = conninfo
        self._redis = aioredis.Redis.from_pool(
            fast_pool(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        )
        self._prefix = channel_prefix
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        # One statement and one pipeline per batch of sends, not per send: the sends of one
        # moment ride together (processors.coalesce).
        self._stores: Coalescer[_Row, datetime] = Coalescer(self._store_batch)
        self._publishes: Coalescer[tuple[str, str], bool] = Coalescer(self._publish_batch)
        # %b: arrays go in binary, without psycopg's per-element text quoting (half the
        # client CPU of a batch insert, measured).
        self._insert_many = sql.SQL(
            "INSERT INTO {t} (notification_id, tenant, recipient, category, title, body, data, "
            "event_type) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
            "%b::text[], %b::text[], %b::jsonb[], %b::text[]) "
            "ON CONFLICT (notification_id) DO NOTHING RETURNING notification_id, created_at"
        ).format(t=sql.Identifier(table))
        self._insert = sql.SQL(
            "INSERT INTO {t} (notification_id, tenant, recipient, category, title, body, data, "
            "event_type) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (notification_id) DO NOTHING RETURNING created_at"
        ).format(t=sql.Identifier(table))

    def channel_for(self, n: Notification) -> str:
        """The Redis channel the gateway subscribes to for this recipient."""
        return f"{self._prefix}{n.tenant or '-'}:{n.recipient}"

    async def _store(self, n: Notification, c: InAppContent) -> datetime:
        row = (
            n.id, n.tenant, n.recipient, n.category, c.title, c.body, json.dumps(c.data),
            n.event_type,
        )  # fmt: skip
        return await self._stores(row)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout_s))
            )
        return self._conn

    async def _store_batch(self, rows: list[_Row]) -> list[datetime | BaseException]:
        """Insert many inbox rows in one statement (unnest); their created_at, in order.

        A row Postgres refuses (DataError) fails the statement: the rows are then inserted
        one by one, so only the bad one fails. Any other psycopg error reaches every caller.
        """
        async with self._lock:
            try:
                # One deadline for the batch, not one per send.
                async with asyncio.timeout(self._timeout_s):
                    conn = await self._connection()
                    try:
                        cols = [list(c) for c in zip(*rows, strict=True)]
                        cur = await conn.execute(self._insert_many, cols)
                        created = {str(r[0]): r[1] for r in await cur.fetchall()}
                    except psycopg.errors.DataError as exc:
                        if len(rows) == 1:
                            return [exc]
                        return [await self._store_one(conn, r) for r in rows]
            except (psycopg.Error, TimeoutError):
                # A connection in an unknown state is never reused: the next batch connects.
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                raise
        # A row that was already there (a retry, a replay) inserts nothing: it is stored.
        now = datetime.now(UTC)
        return [created.get(str(r[0]), now) for r in rows]

    async def _store_one(
        self, conn: psycopg.AsyncConnection[Any], row: _Row
    ) -> datetime | BaseException:
        try:
            cur = await conn.execute(self._insert, row)
            got = await cur.fetchone()
        except psycopg.errors.DataError as exc:
            return exc
        return got[0] if got else datetime.now(UTC)

    async def _publish_batch(self, msgs: list[tuple[str, str]]) -> list[bool | BaseException]:
        """PUBLISH many messages in one pipeline; raises RedisError/OSError for all."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, message in msgs:
                pipe.publish(channel, message)
            await pipe.execute()
        return [True] * len(msgs)

    async def send(self, n: Notification, content: Content) -> str:
        """Store, then publish; returns the notification id. Raises RetryableSendError."""
        inapp = expect_content(content, InAppContent, self.name)
        try:
            created = await self._store(n, inapp)
        except psycopg.errors.DataError as exc:
            raise PermanentSendError(
                f"inbox refused the content ({exc!r}): fix the template output",
                code="invalid_payload",
            ) from exc
        except (psycopg.Error, TimeoutError) as exc:
            raise RetryableSendError(
                f"inbox insert failed ({exc!r}): is Postgres up and the inbox migration "
                "applied (`tidings migrate`)?",
                code="inbox_unavailable",
            ) from exc
        message = {
            "id": n.id, "tenant": n.tenant, "recipient": n.recipient, "category": n.category,
            "title": inapp.title, "body": inapp.body, "data": inapp.data,
            "created_at": created.isoformat(),
        }  # fmt: skip
        # Not awaited: stored is delivered (the gateway reads the inbox on (re)connect), so the
        # send is done without waiting for the wake-up's round trip; `close` flushes them.
        fut = self._publishes.submit((self.channel_for(n), json.dumps(message, default=str)))
        fut.add_done_callback(functools.partial(_published, n.id))
        return n.id

    async def close(self) -> None:
        """Close the Postgres connection and the Redis pool (batches in flight finish first)."""
        await self._stores.close()
        await self._publishes.close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        await self._redis.aclose()
