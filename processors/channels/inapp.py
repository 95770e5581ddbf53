"""In-app: store the notification in the Postgres inbox, then publish it on Redis.

Postgres is the record (the gateway lists the inbox from it); Redis pub/sub only wakes the
gateway processes that hold the recipient's WebSocket, so a lost publish costs latency, never a
message. The insert is idempotent on the notification id (`ON CONFLICT DO NOTHING`): a retry or a
replay stores nothing twice, and publishes again (the gateway dedups by id).
Channel: `{prefix}{tenant or '-'}:{recipient}`; message: JSON of the stored row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from processors.exceptions import PermanentSendError, RetryableSendError
from processors.provider import expect_content
from schemas.content import Content, InAppContent
from schemas.notification import Notification

__all__ = ["DEFAULT_TABLE", "InAppProvider"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = "inbox"
DEFAULT_CHANNEL_PREFIX = "tidings:inbox:"


class InAppProvider:
    """Writes inbox rows and wakes the gateway; one connection, sends serialised on it."""

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
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = channel_prefix
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._insert = sql.SQL(
            "INSERT INTO {t} (notification_id, tenant, recipient, category, title, body, data, "
            "event_type) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (notification_id) DO NOTHING RETURNING created_at"
        ).format(t=sql.Identifier(table))

    def channel_for(self, n: Notification) -> str:
        """The Redis channel the gateway subscribes to for this recipient."""
        return f"{self._prefix}{n.tenant or '-'}:{n.recipient}"

    async def _store(self, n: Notification, c: InAppContent) -> datetime:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout_s))
                )
            params = (
                n.id, n.tenant, n.recipient, n.category, c.title, c.body,
                json.dumps(c.data), n.event_type,
            )  # fmt: skip
            cur = await self._conn.execute(self._insert, params)
            row = await cur.fetchone()
        return row[0] if row else datetime.now(UTC)

    async def send(self, n: Notification, content: Content) -> str:
        """Store, then publish; returns the notification id. Raises RetryableSendError."""
        inapp = expect_content(content, InAppContent, self.name)
        try:
            async with asyncio.timeout(self._timeout_s):
                created = await self._store(n, inapp)
        except psycopg.errors.DataError as exc:
            raise PermanentSendError(
                f"inbox refused the content ({exc!r}): fix the template output",
                code="invalid_payload",
            ) from exc
        except (psycopg.Error, TimeoutError) as exc:
            if self._conn is not None:
                await self._conn.close()
            self._conn = None
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
        try:
            await self._redis.publish(self.channel_for(n), json.dumps(message, default=str))
        except (aioredis.RedisError, OSError) as exc:
            # Stored is delivered: the gateway reads the inbox on (re)connect.
            log.warning(
                "inbox %s stored but not published on Redis (%r): live clients see it on their "
                "next inbox read; check Redis",
                n.id,
                exc,
            )
        return n.id

    async def close(self) -> None:
        """Close the Postgres connection and the Redis pool."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        await self._redis.aclose()
