"""The recipient directory in Postgres: who a `user:` recipient is and how to reach them.

`Directory(conninfo)` is the one way in to the tables of migrations 0006-0008
(docs/recipients.md): `recipients` (one row per tenant and id, preferences and addresses
inside: device tokens, Web Push subscriptions, Slack and webhook URLs, in order) and
`tenant_preferences`. Every method is one transaction and, on the read side, one round trip
for a whole batch (the SQL and the row layout: streams/state/directory_rows.py):

- `apply` materialises a batch of the recipients topic, in offset order, idempotently: a
  change is applied only when its (partition, offset) is newer than the row's, so a
  redelivered batch changes nothing and an older record never overwrites a newer one;
- `lookup` reads a batch of (tenant, id) at once (route: one query per consume batch);
- `changed_since` says which recipients of a batch changed after route decided (deliver);
- `import_rows` bulk-loads with COPY into a temporary table and a plain insert (an upsert
  where a recipient exists) per chunk of 20,000 rows, all in one transaction: all or nothing.

Addresses a push service reported dead (`dead_tokens`, written by the dead-token hook) stay
in the rows that list them but are left out of every read unless the address was seen
since (`last_seen` later than the report): one read per batch, no index from token to
recipient to keep up on every write (docs/decisions/0012-inline-addresses.md).

Sync (psycopg 3), blocking, thread-safe (calls are serialised on one connection). Nothing
connects in `__init__`; the first call (or `connect()`) does. Errors: Postgres unreachable
→ `DependencyDown("postgres", …)` (retry later; the connection is dropped and the next call
reconnects); a login Postgres refuses, or tables missing → `FatalStageError` naming the fix;
Postgres refusing the data itself (a NUL in a text, say) → `DirectoryRefused`, with nothing
of that call written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from pydantic import ValidationError

from schemas.recipient import TENANT_DEFAULTS, Preferences, Recipient, TenantDefaults
from streams.exceptions import DependencyDown, FatalStageError, StreamsError
from streams.state.db import check_login
from streams.state.directory_rows import (
    _BATCH_TYPES,
    _COPY,
    _DEDUPED,
    _DELETE,
    _LOOKUP,
    _TEMP,
    IMPORT_CHUNK,
    Change,
    Prepared,
    _Batch,
    _batch_rows,
    _Feed,
    _insert_new,
    _upsert,
    change_target,
    live_addresses,
    prepare,
)
from streams.state.tenancy import TENANT_SQL, set_role, tenant_value

__all__ = ["Directory", "DirectoryRefused"]

log = logging.getLogger(__name__)

# Slack of `changed_since` (its docstring): a change this long before a decision counts.
CHANGE_SLACK_MS = 5000
_CHANGED = (
    "select k.tenant, k.id "
    "from unnest(%s::text[], %s::text[], %s::float8[]) as k(tenant, id, at) "
    "left join recipients r on r.tenant = k.tenant and r.id = k.id "
    "left join tenant_preferences t on t.tenant = k.tenant "
    "where r.id is null or r.updated_at > to_timestamp(k.at) "
    "or t.updated_at > to_timestamp(k.at)"
)

_COPY_LINE = re.compile(r"COPY dir_batch, line (\d+)")

# A tenant's defaults, replaced; a row that already says the same is left alone (a
# redelivered record must not look like a change to deliver's re-check).
_TENANT_SET = (
    "preferences = excluded.preferences, "
    "required_categories = excluded.required_categories, updated_at = now()"
)
_TENANT_DIFFERS = (
    "(t.preferences <> excluded.preferences "
    "or t.required_categories <> excluded.required_categories)"
)
# Written directly: the row keeps the topic position it was last written from, so an older
# topic record replayed later can't overwrite this (as for an import, `_upsert`).
_TENANT_UPSERT = (
    "insert into tenant_preferences as t (tenant, preferences, required_categories) "
    f"values (%s, %s::jsonb, %s::text[]) on conflict (tenant) do update set {_TENANT_SET} "
    f"where {_TENANT_DIFFERS}"
)
# From the topic: only a record newer than the row's position (another partition counts as
# newer: the topic was repartitioned), moving the position.
_TENANT_FROM_TOPIC = (
    "insert into tenant_preferences as t (tenant, preferences, required_categories, "
    "src_partition, src_offset) values (%s, %s::jsonb, %s::text[], %s, %s) "
    f"on conflict (tenant) do update set {_TENANT_SET}, "
    "src_partition = excluded.src_partition, src_offset = excluded.src_offset "
    "where (t.src_partition <> excluded.src_partition or t.src_offset < excluded.src_offset) "
    f"and {_TENANT_DIFFERS}"
)


def _tenant_row(
    tenant: str, prefs: Preferences, required: Iterable[str]
) -> tuple[str, str, list[str]]:
    # Sorted and once each: the same set in another order is no change.
    return tenant, prefs.model_dump_json(exclude_defaults=True), sorted(set(required))


class DirectoryRefused(StreamsError):
    """Postgres refused the data of one call for good (nothing of it was written).

    `row`: the 1-based place in `import_rows`' input of the row Postgres named, when it did.
    """

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


class Directory:
    """The recipient directory's Postgres tables; one lazily opened connection."""

    def __init__(self, conninfo: str, *, name: str = "directory", role: str | None = None) -> None:
        self._conninfo = conninfo
        self._name = name  # who uses it, for error messages (`recipients`, `route`)
        # The gateway's: query as this role, each lookup for its tenant (row-level security).
        self._role = role
        self._conn: psycopg.Connection[Any] | None = None
        self._temp = False
        self._lock = threading.RLock()
        self._row_base = 0  # import: rows written in earlier chunks (to name a refused row)

    # ------------------------------------------------------------ connection

    def connect(self) -> None:
        """Connect now unless connected; blocks (bounded by the conninfo's connect_timeout).

        Raises DependencyDown when Postgres is unreachable, FatalStageError when it refuses
        the login (a setting to fix).
        """
        with self._lock:
            self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._temp = False
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                check_login(exc, self._name)
                raise DependencyDown(
                    "postgres", f"{self._name}: Postgres unreachable ({exc}); `tidings doctor`"
                ) from exc
            if self._role is not None:
                try:
                    conn.execute(set_role(self._role))
                except psycopg.Error as exc:
                    conn.close()
                    raise FatalStageError(
                        f"{self._name}: cannot query as role {self._role} ({exc}); apply the "
                        "migrations (`tidings db migrate`) or have an administrator create the "
                        "role (docs/operations.md#row-level-security)"
                    ) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the connection if one is open; the next call opens a new one."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to release
                conn.close()

    @contextlib.contextmanager
    def _session(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection, serialised, with psycopg's errors translated (module docstring)."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                raise DependencyDown(
                    "postgres", f"{self._name}: {what} failed, Postgres unreachable ({exc}); "
                    "check it with `tidings doctor`",
                ) from exc  # fmt: skip
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
                raise FatalStageError(
                    f"{self._name}: {what}: the recipient tables are missing or old ({exc}); "
                    "apply the migrations with `tidings db migrate`"
                ) from exc
            except psycopg.errors.InsufficientPrivilege as exc:
                # Not the request's fault: the role lacks a grant (row-level security setup).
                raise FatalStageError(
                    f"{self._name}: {what}: {exc}; apply the migrations (`tidings db migrate`) "
                    "or grant the role what docs/operations.md#row-level-security lists"
                ) from exc
            except psycopg.Error as exc:
                diag = exc.diag
                m = _COPY_LINE.search(diag.context or "") if diag else None
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DirectoryRefused(
                    f"{self._name}: Postgres refused the {what} ({exc.sqlstate}: {first}); "
                    "nothing of it was written",
                    row=self._row_base + int(m.group(1)) if m else None,
                ) from exc

    def _batch_table(self, conn: psycopg.Connection[Any]) -> None:
        if not self._temp:
            conn.execute(_TEMP)
            self._temp = True

    def _copy(
        self, conn: psycopg.Connection[Any], rows: list[_Batch]
    ) -> None:  # fmt: skip
        with conn.cursor().copy(_COPY) as cp:
            cp.set_types(list(_BATCH_TYPES))
            for row in rows:
                cp.write_row(row)

    # ------------------------------------------------------------ the topic

    def apply(self, changes: Sequence[Change]) -> int:
        """Apply a batch of recipients-topic changes in ONE transaction; returns rows changed.

        `changes` are (partition, offset, change, key) in offset order; a None change is a
        tombstone (a delete of the key's recipient). Per recipient only the batch's last
        change counts, and only if newer than the row's (partition, offset): an upsert
        replaces the row and all its addresses, a delete erases the row, its addresses
        (the trigger) and its preferences. A tenant's defaults record replaces its defaults,
        likewise only if newer than the row's position (and different from what it holds).
        Redelivering a batch returns 0 and changes nothing.
        Raises ValueError (pydantic's ValidationError) for a change that doesn't validate
        (nothing written; the stage validates first), and the errors of the module docstring.
        """
        latest: dict[tuple[str, str], tuple[int, int, Recipient | None]] = {}
        # The batch's last defaults per tenant, with their topic position.
        tenants: dict[str, tuple[int, int, TenantDefaults]] = {}
        for part, off, change, key in changes:
            if change is not None and change.type == TENANT_DEFAULTS:
                d = change.tenant_defaults()
                tenants[d.tenant] = (part, off, d)
                continue
            target = change_target(change, key)
            up = change is not None and change.type == "tidings.recipient.upserted"
            latest.pop(target, None)  # keep the offset order of the last change per key
            latest[target] = (part, off, change.recipient() if up and change else None)
        ups = [_batch_rows(prepare(r), i, p, o) for i, (p, o, r) in enumerate(latest.values()) if r]
        dels = [(t, i, p, o) for (t, i), (p, o, r) in latest.items() if r is None]
        if not latest and not tenants:
            return 0
        with self._session("write of a recipients batch") as conn:
            self._batch_table(conn)
            return self._apply(conn, ups, dels, list(tenants.values()))

    def _apply(
        self, conn: psycopg.Connection[Any],
        ups: list[_Batch],
        dels: list[tuple[str, str, int, int]],
        tenants: list[tuple[int, int, TenantDefaults]],
    ) -> int:  # fmt: skip
        with conn.transaction():
            changed = 0
            for part, off, d in tenants:  # a handful at most: one statement each
                t_row = _tenant_row(d.tenant, d.preferences, d.required_categories)
                changed += conn.execute(_TENANT_FROM_TOPIC, (*t_row, part, off)).rowcount
            if ups:
                self._copy(conn, ups)
                changed += conn.execute(_upsert("dir_batch", from_topic=True)).rowcount
            if dels:
                cur = conn.execute(_DELETE, [list(c) for c in zip(*dels, strict=True)])
                changed += cur.rowcount
            return int(changed)

    # ------------------------------------------------------------ reads

    def lookup(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Recipient]:
        """The stored recipients among `keys` ((tenant, id) pairs), in ONE round trip.

        Missing ones are absent from the result. Addresses come in their stored order,
        without those a push service reported dead (`live_addresses`). A row that no longer
        validates (edited by hand) is left out with a warning. Blocks; raises the errors of
        the module docstring.
        """
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        tenants, ids = [t for t, _ in wanted], [i for _, i in wanted]
        with self._session("recipient lookup") as conn:
            if self._role is None:
                rows = conn.execute(_LOOKUP, (tenants, ids)).fetchall()
            else:
                rows = []
                for tenant in dict.fromkeys(tenants):  # one transaction per tenant
                    mine = [i for t, i in wanted if t == tenant]
                    with conn.transaction():
                        conn.execute(TENANT_SQL, (tenant_value(tenant),))
                        rows += conn.execute(_LOOKUP, ([tenant] * len(mine), mine)).fetchall()
        found: dict[tuple[str, str], Recipient] = {}
        for doc, dead in rows:
            try:
                r = Recipient.model_validate_json(doc)
                if dead is not None:  # rare: one of its tokens was reported dead
                    r = live_addresses(r, _reports(dead))
            except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
                log.warning("%s: a stored recipient doesn't validate, skipped: %s",
                            self._name, exc)  # fmt: skip
                continue
            found[(r.tenant, r.id)] = r
        return found

    def changed_since(self, seen: Iterable[tuple[str, str, int]]) -> set[tuple[str, str]]:
        """Which of `seen` ((tenant, id, epoch ms a decision read it)) changed since, in ONE
        round trip: the recipient was written or erased after that instant, or its tenant's
        defaults were. Blocks; raises the errors of the module docstring.

        "After" is with `CHANGE_SLACK_MS` of slack: the writer's `now()` is its transaction's
        start, and the deciding host's clock may be behind Postgres's.
        """
        latest: dict[tuple[str, str], int] = {}
        for tenant, rid, at_ms in seen:
            key = (tenant, rid)
            latest[key] = min(at_ms, latest.get(key, at_ms))
        if not latest:
            return set()
        tenants, ids = [t for t, _ in latest], [i for _, i in latest]
        at = [(ms - CHANGE_SLACK_MS) / 1000.0 for ms in latest.values()]
        with self._session("recipient change check") as conn:
            rows = conn.execute(_CHANGED, (tenants, ids, at)).fetchall()
        return {(t, i) for t, i in rows}

    def tenant_defaults(
        self, tenants: Iterable[str]
    ) -> dict[str, tuple[Preferences, tuple[str, ...]]]:
        """Each tenant's (default preferences, required categories), in ONE round trip.

        Every tenant asked for is in the result: one without a row gets `(Preferences(), ())`.
        A stored row that doesn't validate counts as none (with a warning). Blocks; raises
        the errors of the module docstring.
        """
        wanted = list(dict.fromkeys(tenants))
        out: dict[str, tuple[Preferences, tuple[str, ...]]] = {
            t: (Preferences(), ()) for t in wanted
        }
        if not wanted:
            return out
        with self._session("tenant preferences lookup") as conn:
            rows = conn.execute(
                "select tenant, preferences::text, required_categories from tenant_preferences "
                "where tenant = any(%s::text[])",
                (wanted,),
            ).fetchall()
        for tenant, prefs, required in rows:
            try:
                out[tenant] = (Preferences.model_validate_json(prefs), tuple(required))
            except ValidationError as exc:
                log.warning("%s: tenant %r's default preferences don't validate: %s",
                            self._name, tenant, exc)  # fmt: skip
        return out

    def set_tenant_defaults(
        self, tenant: str, preferences: Preferences, required: Sequence[str] = ()
    ) -> None:
        """Store a tenant's default preferences and required categories (replacing them)."""
        with self._session("tenant preferences write") as conn:
            conn.execute(_TENANT_UPSERT, _tenant_row(tenant, preferences, required))

    # ------------------------------------------------------------ writes

    def import_rows(
        self,
        rows: Iterable[Recipient | Prepared],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Upsert every recipient of `rows` in ONE transaction; returns how many were written.

        `rows` are Recipients, or recipients already `Prepared` (a fast path for a reader
        that validated them itself: `streams.state.recipient_rows`).

        COPY into a temporary table and an upsert, chunk by chunk, in one transaction: all
        or nothing (nothing is visible until the end, and a refusal leaves the directory as
        it was). `rows` is read on a thread of its own, so reading the next chunk overlaps
        Postgres merging the last (it must not share this Directory). Each recipient
        replaces the row and all its addresses; the row's topic position is kept (module
        docstring). A recipient listed twice: the last one wins. `progress(n)` after each
        chunk written. Blocks (seconds per 100,000 rows); raises what `rows` raises, and the
        errors of the module docstring (DirectoryRefused.row: which row Postgres refused).
        """
        try:
            with self._session("import") as conn:
                self._batch_table(conn)  # outside the transaction: a rollback must not drop it
                feed = _Feed(rows, IMPORT_CHUNK, conn.cursor())
                try:
                    return self._import(conn, feed, progress)
                finally:
                    feed.close()
        finally:
            self._row_base = 0

    def _import(
        self, conn: psycopg.Connection[Any], feed: _Feed,
        progress: Callable[[int], None] | None,
    ) -> int:  # fmt: skip
        written = 0
        with conn.transaction():
            for rows, batch in feed:
                with conn.cursor().copy(_COPY) as cp:
                    cp.write(batch)
                written += self._merge(conn)
                conn.execute("truncate dir_batch")
                self._row_base += rows
                if progress is not None:
                    progress(self._row_base)
        return written

    def _merge(self, conn: psycopg.Connection[Any]) -> int:
        """The chunk in dir_batch into `recipients`; returns the rows written."""
        try:
            # New recipients (the common case: a first load): a plain insert, in a savepoint;
            # a key that exists, or is in the chunk twice, undoes it and takes the upsert.
            with conn.transaction():
                return conn.execute(_insert_new("dir_batch")).rowcount
        except psycopg.errors.UniqueViolation:
            pass
        try:
            with conn.transaction():  # a savepoint: a key listed twice in the chunk
                return conn.execute(_upsert("dir_batch", from_topic=False)).rowcount
        except psycopg.errors.CardinalityViolation:
            return conn.execute(_upsert(_DEDUPED, from_topic=False)).rowcount


def _reports(text: str) -> list[tuple[str, str, datetime]]:
    # The lookup's `[[channel, token, last reported], …]` (json of timestamptz: ISO 8601).
    return [(c, t, datetime.fromisoformat(at)) for c, t, at in json.loads(text)]
