"""State outside Kafka: Redis send claims and the Postgres deliveries log, migrations,
the live catalog read from its topic, and the recipient directory (with its file formats).
"""

from __future__ import annotations

from streams.state.caps import CAP_MAX_CHECKS, CapStore
from streams.state.catalog import DEFAULT_CATALOG_KEY, DEFAULT_CATALOG_TOPIC, CatalogRef
from streams.state.claims import Claim, ClaimStore
from streams.state.db import (
    Migration,
    apply_migrations,
    audit_partition_ddl,
    check_login,
    login_fix,
    migrations,
    month_start,
    require_migrations,
    wait_for_migrations,
)
from streams.state.deliveries import LOOKUP_TIMEOUT_S, Delivery, DeliveryLog, SentRecord
from streams.state.directory import Directory, DirectoryRefused
from streams.state.directory_rows import (
    IMPORT_CHUNK,
    NO_PREFERENCES,
    Change,
    Prepared,
    change_target,
    live_addresses,
    prepare,
)
from streams.state.dirwatch import DirWatch
from streams.state.every import Every
from streams.state.history import AuditHistory, HistoryCursor
from streams.state.idempotency import Begun, IdempotencyStore, fingerprint
from streams.state.inbox import ACTIONS, FILTERS, Action, Inbox, InboxCursor, InboxFilter
from streams.state.pg_async import AsyncPg, RefusedInput
from streams.state.presence import PRESENCE_PREFIX, PresenceReader, presence_key
from streams.state.rate_limit import RateLimiter
from streams.state.recipient_rows import (
    CSV_COLUMNS,
    count_lines,
    decode_change,
    delete_change,
    describe,
    parse_csv_row,
    parse_json_line,
    prepare_csv_row,
    read_prepared,
    read_recipients,
    tenant_defaults_change,
    upsert_change,
)
from streams.state.tenancy import TENANT_SQL, set_role, tenant_value

__all__ = [
    "ACTIONS",
    "CAP_MAX_CHECKS",
    "CSV_COLUMNS",
    "DEFAULT_CATALOG_KEY",
    "DEFAULT_CATALOG_TOPIC",
    "FILTERS",
    "IMPORT_CHUNK",
    "LOOKUP_TIMEOUT_S",
    "NO_PREFERENCES",
    "PRESENCE_PREFIX",
    "TENANT_SQL",
    "Action",
    "AsyncPg",
    "AuditHistory",
    "Begun",
    "CapStore",
    "CatalogRef",
    "Change",
    "Claim",
    "ClaimStore",
    "Delivery",
    "DeliveryLog",
    "DirWatch",
    "Directory",
    "DirectoryRefused",
    "Every",
    "HistoryCursor",
    "IdempotencyStore",
    "Inbox",
    "InboxCursor",
    "InboxFilter",
    "Migration",
    "Prepared",
    "PresenceReader",
    "RateLimiter",
    "RefusedInput",
    "SentRecord",
    "apply_migrations",
    "audit_partition_ddl",
    "change_target",
    "check_login",
    "count_lines",
    "decode_change",
    "delete_change",
    "describe",
    "fingerprint",
    "live_addresses",
    "login_fix",
    "migrations",
    "month_start",
    "parse_csv_row",
    "parse_json_line",
    "prepare",
    "prepare_csv_row",
    "presence_key",
    "read_prepared",
    "read_recipients",
    "require_migrations",
    "set_role",
    "tenant_defaults_change",
    "tenant_value",
    "upsert_change",
    "wait_for_migrations",
]
