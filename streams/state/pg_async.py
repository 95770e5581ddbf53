"""One lazily opened async Postgres connection for the gateway's readers (history, inbox,
API keys): queries serialised on it, psycopg's errors translated.

`AsyncPg(conninfo, what)`: `rows(sql, params)` returns dict rows ([] for a statement that
returns none). Errors: a value Postgres refuses (DataError) → RefusedInput; Postgres
unreachable or the query failing otherwise → DependencyDown (the connection is dropped;
the next call reconnects); a table or column missing →
FatalStageError naming `tidings db migrate`. Nothing connects in `__init__`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from streams.exceptions import DependencyDown, FatalStageError, StreamsError

__all__ = ["AsyncPg", "RefusedInput"]


class RefusedInput(StreamsError, ValueError):
    """Postgres refused a value of the request itself (a NUL character in a text): the
    caller answers 400; retrying the same request can't help."""


class AsyncPg:
    """A connection for one event loop; `what` names the user in error messages."""

    def __init__(self, conninfo: str, what: str) -> None:
        self._conninfo = conninfo
        self._what = what
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def rows(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Run `sql`; its rows as dicts. Awaits Postgres (connect bounded by 5 s)."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=5, row_factory=dict_row
                    )
                cur = await self._conn.execute(sql, params)
                return await cur.fetchall() if cur.description else []
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
                raise FatalStageError(
                    f"{self._what}: a table is missing or old ({exc}); "
                    "apply the migrations with `tidings db migrate`"
                ) from exc
            except psycopg.DataError as exc:
                raise RefusedInput(f"{self._what}: Postgres refused a value ({exc})") from exc
            except psycopg.Error as exc:
                await self._drop()
                raise DependencyDown(
                    "postgres", f"{self._what}: query failed, Postgres unreachable ({exc})"
                ) from exc

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        """Close the connection if open; a later call opens a new one."""
        async with self._lock:
            await self._drop()
