"""The default dead-token hook: record dead device tokens in the Postgres `dead_tokens` table.

`PostgresDeadTokens(conninfo)` is a DeadTokenHook (`await hook(dead)`). It upserts one row per
(channel, token): a token reported again keeps `first_seen_at` and moves `last_seen_at`, so
replays and retries add nothing. The recipient directory reads this table with every
lookup and leaves the address out (matched by channel and token, or for Web Push by the
subscription's endpoint) unless it was seen after it was reported, so the next send to
anyone listing it skips it (streams/state/directory.py). The table comes from migrations
`0005_dead_tokens.sql` and `0008_inline_addresses.sql` (`tidings db migrate`).

One connection, opened on the first call (never in `__init__`, so building providers connects
to nothing and the connection belongs to the event loop that sends), calls serialised on it.
A failed call drops the connection; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg

from processors.channels.push.deadtoken import DeadToken

__all__ = ["PostgresDeadTokens"]

_UPSERT = (
    "INSERT INTO dead_tokens (channel, token, recipient, provider, reason, notification_id) "
    "VALUES (%(channel)s, %(token)s, %(recipient)s, %(provider)s, %(reason)s, %(nid)s) "
    "ON CONFLICT (channel, token) DO UPDATE SET recipient = EXCLUDED.recipient, "
    "provider = EXCLUDED.provider, reason = EXCLUDED.reason, "
    "notification_id = EXCLUDED.notification_id, last_seen_at = now()"
)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    # Pipeline notification ids are uuids; a hand-built one may not be, and must not lose the row.
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class PostgresDeadTokens:
    """DeadTokenHook writing `dead_tokens`; safe to share by the providers of one event loop."""

    def __init__(self, conninfo: str, *, timeout_s: float = 5.0) -> None:
        self._conninfo = conninfo
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # binds to the loop of its first use, not to this thread

    async def __call__(self, dead: DeadToken) -> None:
        """Upsert the row (the directory hides the address from then on); awaits Postgres
        for at most `timeout_s`.

        Raises psycopg.Error or TimeoutError when Postgres is down, and RuntimeError (with the
        fix) when a table is missing; the providers' `report_dead` logs these, never raises.
        """
        params = {
            "channel": dead.channel, "token": dead.token, "recipient": dead.recipient,
            "provider": dead.provider, "reason": dead.reason,
            "nid": _uuid_or_none(dead.notification_id),
        }  # fmt: skip
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._conninfo,
                            autocommit=True,
                            connect_timeout=max(1, int(self._timeout_s)),
                        )
                    await self._conn.execute(_UPSERT, params)
            except psycopg.errors.UndefinedTable as exc:
                raise RuntimeError(
                    f"a table is missing ({exc}): apply the migrations (`tidings db migrate`)"
                ) from exc
            except (psycopg.Error, TimeoutError):
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        """Close the connection, if one is open; a later call opens a new one."""
        async with self._lock:
            await self._drop()
