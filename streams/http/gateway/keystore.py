"""The `api_keys` table (migration 0009): the gateway's async reads, the CLI's sync writes.

`ApiKeyStore(conninfo, cache_s=…)` finds a key by prefix for the gateway: one lazily opened
async connection, a bounded cache of what it read (a key, or its absence) for `cache_s`
seconds, so a busy gateway reads Postgres once per key per window and a revoked key stops
working within `cache_s`. `create_key`, `list_keys`, `revoke_key` are the CLI's (blocking).
Errors: Postgres unreachable → DependencyDown (the caller answers 503); the table missing
→ FatalStageError naming `tidings db migrate`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import psycopg

from streams.exceptions import DependencyDown, FatalStageError
from streams.http.gateway.keys import ApiKey
from streams.state.pg_async import AsyncPg

__all__ = ["ApiKeyStore", "create_key", "list_keys", "revoke_key"]

_NAMES = ("prefix", "tenant", "scopes", "secret_sha256", "revoked_at", "name")
_COLUMNS = ", ".join(_NAMES)
_MAX_CACHED = 10_000  # keys remembered at once (the oldest read is forgotten first)


def _row(r: tuple[Any, ...]) -> ApiKey:
    return ApiKey(r[0], r[1], tuple(r[2]), bytes(r[3]), r[4], r[5])


def _translate(exc: psycopg.Error, what: str) -> Exception:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return FatalStageError(
            f"gateway: {what}: the api_keys table is missing ({exc}); "
            "apply the migrations with `tidings db migrate`"
        )
    return DependencyDown("postgres", f"gateway: {what} failed, Postgres unreachable ({exc})")


class ApiKeyStore:
    """Keys by prefix, cached; use from one event loop. Nothing connects in `__init__`."""

    def __init__(self, conninfo: str, *, cache_s: float = 30.0, role: str | None = None) -> None:
        self._pg = AsyncPg(conninfo, "gateway: API key lookup", role=role)
        self._cache_s = cache_s
        self._cache: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()

    async def get(self, prefix: str) -> ApiKey | None:
        """The key named `prefix`, or None; awaits Postgres at most once per `cache_s`.

        Raises DependencyDown or FatalStageError (module docstring).
        """
        now = time.monotonic()
        hit = self._cache.get(prefix)
        if hit is not None and now - hit[0] < self._cache_s:
            return hit[1]
        rows = await self._pg.rows(f"select {_COLUMNS} from api_keys where prefix = %s", (prefix,))
        key = _row(tuple(rows[0][c] for c in _NAMES)) if rows else None
        self._cache[prefix] = (now, key)
        self._cache.move_to_end(prefix)
        while len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)
        return key

    async def close(self) -> None:
        """Close the connection if open; a later `get` opens a new one."""
        await self._pg.close()


def _sync(conninfo: str, what: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else [(cur.rowcount,)]
    except psycopg.Error as exc:
        raise _translate(exc, what) from exc


def create_key(conninfo: str, key: ApiKey) -> str:
    """Store a new key; returns its prefix (blocks). Raises DependencyDown or FatalStageError."""
    _sync(
        conninfo,
        "API key creation",
        "insert into api_keys (prefix, tenant, name, scopes, secret_sha256) "
        "values (%s, %s, %s, %s, %s)",
        (key.prefix, key.tenant, key.name, list(key.scopes), key.secret_sha256),
    )
    return key.prefix


def list_keys(conninfo: str, tenant: str | None = None) -> list[ApiKey]:
    """The stored keys (of `tenant`, or all), oldest first (blocks)."""
    rows = _sync(
        conninfo,
        "API key list",
        f"select {_COLUMNS} from api_keys where %s::text is null or tenant = %s "
        "order by created_at, prefix",
        (tenant, tenant),
    )
    return [_row(r) for r in rows]


def revoke_key(conninfo: str, prefix: str) -> bool:
    """Revoke the key named `prefix`; False when there is no such live key (blocks)."""
    [(n,)] = _sync(
        conninfo,
        "API key revocation",
        "update api_keys set revoked_at = now() where prefix = %s and revoked_at is null",
        (prefix,),
    )
    return bool(n)
