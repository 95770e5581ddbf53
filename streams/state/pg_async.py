"""One lazily opened async Postgres connection for the gateway's readers (history, inbox,
API keys): queries serialised on it, psycopg's errors translated.

`AsyncPg(conninfo, what, role=)`: `rows(sql, params, tenant=)` returns dict rows ([] for a
statement that returns none). With `role`, the connection queries as that role; with
`tenant`, the query runs in a transaction for that tenant (row-level security:
streams/state/tenancy.py). Errors: a value Postgres refuses (DataError) → RefusedInput;
Postgres unreachable or the query failing otherwise → DependencyDown (the connection is
dropped; the next call reconnects); a table or column missing, or the role missing or
lacking a grant → FatalStageError naming the fix. Nothing connects in `__init__`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from streams.exceptions import DependencyDown, FatalStageError, StreamsError
from streams.state.tenancy import TENANT_SQL, set_role, tenant_value

__all__ = ["AsyncPg", "RefusedInput"]


class RefusedInput(StreamsError, ValueError):
    """Postgres refused a value of the request itself (a NUL character in a text): the
    caller answers 400; retrying the same request can't help."""


class AsyncPg:
    """A connection for one event loop; `what` names the user in error messages."""

    def __init__(self, conninfo: str, what: str, *, role: str | None = None) -> None:
        self._conninfo = conninfo
        self._what = what
        self._role = role
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def rows(
        self, sql: str, params: Sequence[Any], *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Run `sql`; its rows as dicts. Awaits Postgres (connect bounded by 5 s).

        `tenant`: run it in a transaction for that tenant (row-level security lets only its
        rows through when the connection has a `role`).
        """
        async with self._lock:
            try:
                conn = await self._connection()
                if tenant is None:
                    cur = await conn.execute(sql, params)
                    return await cur.fetchall() if cur.description else []
                async with conn.transaction():
                    await conn.execute(TENANT_SQL, (tenant_value(tenant),))
                    cur = await conn.execute(sql, params)
                    return await cur.fetchall() if cur.description else []
            except (
                psycopg.errors.InvalidParameterValue,
                psycopg.errors.InsufficientPrivilege,
            ) as exc:
                connecting = self._conn is None
                if not connecting and isinstance(exc, psycopg.errors.InvalidParameterValue):
                    raise RefusedInput(f"{self._what}: Postgres refused a value ({exc})") from exc
                raise FatalStageError(
                    f"{self._what}: as role {self._role or '(the login)'}: {exc}; apply the "
                    "migrations (`tidings db migrate`), or have an administrator create the "
                    "role and its grants (docs/operations.md#row-level-security)"
                ) from exc
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

    async def _connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=5, row_factory=dict_row
            )
            if self._role is not None:
                try:
                    await conn.execute(set_role(self._role))
                except BaseException:
                    await conn.close()
                    raise
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        """Close the connection if open; a later call opens a new one."""
        async with self._lock:
            await self._drop()
