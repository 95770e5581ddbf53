"""Row-level security from the client's side: the role the gateway queries as, and the
tenant a transaction is for (migration 0011_row_level_security.sql, docs/api.md#isolation).

`set_role(role)` is run once on a new connection; `TENANT_SQL` with `tenant_value(tenant)`
first in each transaction of a tenant's request. Pure: SQL text only.
"""

from __future__ import annotations

from psycopg import sql

__all__ = ["TENANT_SQL", "set_role", "tenant_value"]

# Transaction-local: it ends with the transaction, so no later query inherits a tenant.
TENANT_SQL = "select set_config('tidings.tenant', %s, true)"


def tenant_value(tenant: str) -> str:
    """What the policies compare with 't:' || tenant (never equal to an unset setting)."""
    return f"t:{tenant}"


def set_role(role: str) -> sql.Composed:
    """`SET ROLE role`, the name quoted as an identifier."""
    return sql.SQL("set role {}").format(sql.Identifier(role))
