"""Postgres adapter: versioned SQL migrations and monthly audit partitions.

Migrations are plain SQL files `NNNN_name.sql` in `streams/state/migrations/`,
applied in order, each in its own transaction, under an advisory lock so two
processes migrating at once don't collide.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources

import psycopg

from streams.exceptions import DependencyDown, FatalStageError
from streams.runtime.outage import Outage

__all__ = [
    "Migration",
    "apply_migrations",
    "audit_partition_ddl",
    "check_login",
    "login_fix",
    "migrations",
    "month_start",
    "require_migrations",
    "wait_for_migrations",
]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x71D1_6501  # arbitrary, fixed: the advisory lock migrations take

# A login Postgres refuses names settings to fix: (libpq's text for it, the settings).
# psycopg leaves `sqlstate` None on a failed connect, so the server's message decides then.
_REFUSALS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r'database "[^"]*" does not exist'), ("database",)),
    (re.compile(r'role "[^"]*" does not exist'), ("user",)),
    (re.compile(r"no pg_hba\.conf entry"), ("user", "database")),
    (re.compile(r"authentication failed|no password supplied"), ("user", "password")),
)


def login_fix(exc: BaseException) -> str | None:
    """The fix for a login Postgres refused, naming the settings; None if `exc` is not one.

    A refusal is SQLSTATE class 28 (invalid authorization) or 3D000 (no such database),
    or, when psycopg leaves `sqlstate` None (it does on connect), libpq's message for one.
    Pure; an unreachable server (an outage) is never a refusal.
    """
    state: str | None = getattr(exc, "sqlstate", None)
    if state is not None and state != "3D000" and not state.startswith("28"):
        return None
    text = str(exc)
    fields = next((f for pattern, f in _REFUSALS if pattern.search(text)), None)
    if fields is None and state is not None:
        fields = ("database",) if state == "3D000" else ("user", "password")
    if fields is None:
        return None
    names = " / ".join(f"postgres.{f}" for f in fields)
    envs = " / ".join(f"TIDINGS_POSTGRES__{f.upper()}" for f in fields)
    return f"fix {names} (env {envs})"


def check_login(exc: BaseException, stage: str) -> None:
    """Raise FatalStageError `from exc` if `exc` is a login Postgres refused; else return.

    Every Postgres connect site calls it before treating a failure as an outage: wrong
    credentials or an unknown database are a setting to fix, and retrying never helps.
    """
    fix = login_fix(exc)
    if fix is not None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FatalStageError(
            f"{stage}: Postgres refused the login ({first}); a setting, not an outage, so "
            f"not retried: {fix}, then start again"
        ) from exc


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with tidings, in version order."""
    found = []
    for entry in resources.files("streams.state.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    return found


def apply_migrations(conninfo: str) -> list[Migration]:
    """Apply pending migrations; returns those applied. Blocks; raises FatalStageError."""
    applied: list[Migration] = []
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
            try:
                conn.execute(
                    "create table if not exists schema_migrations ("
                    " version integer primary key, name text not null,"
                    " applied_at timestamptz not null default now())"
                )
                done = {r[0] for r in conn.execute("select version from schema_migrations")}
                for mig in migrations():
                    if mig.version in done:
                        continue
                    with conn.transaction():
                        conn.execute(mig.sql.encode())
                        conn.execute(
                            "insert into schema_migrations (version, name) values (%s, %s)",
                            (mig.version, mig.name),
                        )
                    applied.append(mig)
            finally:
                conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        check_login(exc, "migrate")
        raise FatalStageError(
            f"migration failed: {exc}; check the database is reachable (`tidings doctor`)"
        ) from exc
    return applied


def require_migrations(conninfo: str, stage: str) -> None:
    """Refuse to start a stage on a database that lacks a shipped migration; blocks.

    Raises FatalStageError naming the missing migrations and the fix, or naming the setting
    to fix when Postgres refuses the login (`check_login`); DependencyDown when Postgres
    can't be reached (`wait_for_migrations` waits it out). Checked before any work, because
    a deliver stage on an old schema would fail only after a provider had accepted a message.
    """
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("select to_regclass('schema_migrations')").fetchone()
            done = (
                {r[0] for r in conn.execute("select version from schema_migrations")}
                if exists and exists[0]
                else set()
            )
    except psycopg.Error as exc:
        check_login(exc, stage)
        raise DependencyDown(
            "postgres", f"{stage}: Postgres unreachable ({exc}); check it with `tidings doctor`"
        ) from exc
    missing = [f"{m.version:04d}_{m.name}" for m in migrations() if m.version not in done]
    if missing:
        raise FatalStageError(
            f"{stage}: the database lacks migration(s) {', '.join(missing)}; "
            "apply them with `tidings db migrate`, then start the stage again"
        )


def wait_for_migrations(conninfo: str, stage: str, stop: threading.Event, outage: Outage) -> None:
    """`require_migrations`, riding out Postgres being down at start; blocks.

    Raises FatalStageError as `require_migrations` does (a refused login at once, never
    retried; an outage past its bound), and StageStopping if asked to stop first.
    """
    outage.retry(lambda: require_migrations(conninfo, stage), stop)


def month_start(t: datetime) -> date:
    """First day of `t`'s month (UTC)."""
    u = t.astimezone(UTC)
    return date(u.year, u.month, 1)


def audit_partition_ddl(month: date) -> str:
    """DDL creating the audit_log partition for `month` if it is missing; pure."""
    nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    name = f"audit_log_y{month.year:04d}m{month.month:02d}"
    return (
        f"create table if not exists {name} partition of audit_log "
        f"for values from ('{month.isoformat()}') to ('{nxt.isoformat()}')"
    )
