"""Row-level security in real Postgres: as the gateway's role, a tenant's transaction sees and
changes only that tenant's rows of recipients, inbox and the audit log, whatever the SQL
asks for; without a tenant it sees nothing; what the role isn't granted it can't touch.
And the gateway's own adapters, run as that role, are held to it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest

from schemas.settings import TidingsSettings
from streams.exceptions import FatalStageError
from streams.state import AsyncPg, Directory, Inbox
from streams.state.db import apply_migrations, audit_partition_ddl
from streams.state.tenancy import TENANT_SQL, set_role, tenant_value

ROLE = "tidings_gateway"


@pytest.fixture
def rows(settings: TidingsSettings) -> Iterator[dict[str, Any]]:
    """One recipient, inbox entry and audit row for each of two fresh tenants."""
    u = uuid.uuid4().hex[:10]
    a, b = f"rls-a-{u}", f"rls-b-{u}"
    conninfo = settings.postgres.conninfo()
    apply_migrations(conninfo)
    nids = {a: str(uuid.uuid4()), b: str(uuid.uuid4())}
    now = datetime.now(UTC)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(audit_partition_ddl(date(now.year, now.month, 1)))
        for t in (a, b):
            conn.execute("insert into recipients (tenant, id) values (%s, 'u1')", (t,))
            conn.execute(
                "insert into inbox (notification_id, tenant, recipient, title, body, event_type)"
                " values (%s, %s, 'u1', 't', 'b', 'e')",
                (nids[t], t),
            )
            conn.execute(
                "insert into audit_log (notification_id, status, attempt, event_at, status_at,"
                " status_event_id, source_event_id, source_event_type, tenant, rule_id,"
                " rule_version, template_id, template_version, catalog_version, channel,"
                " recipient_id) values (%s, 'sent', 1, %s, %s, %s, 'e', 't', %s, 'r', 1,"
                " 'tp', '1', 'c', 'inapp', 'u1')",
                (nids[t], now, now, str(uuid.uuid4()), t),
            )
    yield {"a": a, "b": b, "nids": nids, "conninfo": conninfo}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table, col in (("recipients", "tenant"), ("inbox", "tenant"),
                           ("audit_log", "tenant")):  # fmt: skip
            conn.execute(f"delete from {table} where {col} = any(%s)", ([a, b],))


def _as_role(conninfo: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(conninfo, autocommit=True)
    conn.execute(set_role(ROLE))
    return conn


def _mine(conn: psycopg.Connection[Any], tenant: str | None, sql: str) -> list[Any]:
    with conn.transaction():
        if tenant is not None:
            conn.execute(TENANT_SQL, (tenant_value(tenant),))
        return [r[0] for r in conn.execute(sql).fetchall()]


def test_a_tenants_transaction_sees_only_its_rows(rows: dict[str, Any]) -> None:
    a, b = rows["a"], rows["b"]
    with _as_role(rows["conninfo"]) as conn:
        assert conn.execute("select current_user").fetchone() == (ROLE,)
        for table in ("recipients", "inbox", "audit_log"):
            # No WHERE at all: the policy is what keeps tenant b's rows out.
            every = f"select tenant from {table} where tenant in ('{a}', '{b}')"
            assert _mine(conn, a, every) == [a], table
            assert _mine(conn, b, every) == [b], table
            assert _mine(conn, None, every) == [], f"{table}: no tenant, no rows"
            assert _mine(conn, "", every) == [], f"{table}: the empty tenant is not a wildcard"
        # After a tenant's transaction, the next one without a tenant inherits nothing.
        assert _mine(conn, None, f"select tenant from inbox where tenant = '{a}'") == []


def test_a_tenant_cant_change_another_tenants_rows_or_reach_past_its_grants(
    rows: dict[str, Any],
) -> None:
    a, b = rows["a"], rows["b"]
    with _as_role(rows["conninfo"]) as conn:
        changed = _mine(conn, a, f"update inbox set read_at = now() where tenant = '{b}' "
                                 "returning notification_id")  # fmt: skip
        assert changed == [], "b's entry is invisible to a's transaction: nothing to update"
        mine = _mine(conn, a, "update inbox set read_at = now() returning tenant")
        assert mine == [a] or set(mine) <= {a}
        for sql in (
            f"update inbox set tenant = '{b}' where tenant = '{a}'",  # a column not granted
            f"insert into inbox (notification_id, tenant, recipient, title, body, event_type)"
            f" values ('x', '{b}', 'u', 't', 'b', 'e')",
            "select count(*) from deliveries",
            f"delete from recipients where tenant = '{a}'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                _mine(conn, a, sql)
    with psycopg.connect(rows["conninfo"], autocommit=True) as owner:
        got = owner.execute("select read_at is null from inbox where notification_id = %s",
                            (rows["nids"][b],)).fetchone()  # fmt: skip
        assert got == (True,), "b's entry was not marked by a"


def test_the_gateways_adapters_are_held_to_it(rows: dict[str, Any]) -> None:
    a, b, conninfo = rows["a"], rows["b"], rows["conninfo"]

    async def go() -> None:
        pg = AsyncPg(conninfo, "test", role=ROLE)
        inbox = Inbox(conninfo, role=ROLE)
        try:
            got = await pg.rows("select tenant from inbox where tenant like 'rls-%%'", (),
                                tenant=a)  # fmt: skip
            assert [r["tenant"] for r in got] == [a]
            assert await pg.rows("select tenant from recipients", (), tenant=None) == []
            # The adapter asked for b's entry under a's tenant: the database says none.
            assert await inbox.pending(a, "u1", "read", [rows["nids"][b]], 10) == []
            assert await inbox.pending(b, "u1", "read", [rows["nids"][b]], 10) == [rows["nids"][b]]
        finally:
            await pg.close()
            await inbox.close()

    asyncio.run(go())
    d = Directory(conninfo, name="gateway", role=ROLE)
    try:
        assert set(d.lookup([(a, "u1"), (b, "u1")])) == {(a, "u1"), (b, "u1")}
        # What the role isn't granted is a setup error to fix, not the request's (no 400).
        with pytest.raises(FatalStageError, match="row-level-security"):
            d.tenant_defaults({a})
    finally:
        d.close()


def test_a_missing_role_is_a_clear_error(rows: dict[str, Any]) -> None:
    async def go() -> None:
        pg = AsyncPg(rows["conninfo"], "test", role="no_such_role_tidings")
        try:
            with pytest.raises(FatalStageError, match=r"no_such_role_tidings.*tidings db migrate"):
                await pg.rows("select 1", ())
        finally:
            await pg.close()

    asyncio.run(go())
