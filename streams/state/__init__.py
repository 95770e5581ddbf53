"""State outside Kafka: Redis send claims and the Postgres deliveries log, migrations,
and the live catalog read from its topic.
"""

from __future__ import annotations

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
from streams.state.dirwatch import DirWatch

__all__ = [
    "DEFAULT_CATALOG_KEY",
    "DEFAULT_CATALOG_TOPIC",
    "LOOKUP_TIMEOUT_S",
    "CatalogRef",
    "Claim",
    "ClaimStore",
    "Delivery",
    "DeliveryLog",
    "DirWatch",
    "Migration",
    "SentRecord",
    "apply_migrations",
    "audit_partition_ddl",
    "check_login",
    "login_fix",
    "migrations",
    "month_start",
    "require_migrations",
    "wait_for_migrations",
]
