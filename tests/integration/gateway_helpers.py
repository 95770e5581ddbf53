"""What the gateway's integration tests share: API keys made with the real CLI, and inbox
entries stored by the real in-app provider with their sends recorded, as deliver does."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import Sequence

import psycopg
from confluent_kafka.admin import AdminClient

from processors.channels.inapp import InAppProvider
from schemas.content import InAppContent
from schemas.notification import Notification, notification_id
from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.state import DeliveryLog, SentRecord

__all__ = ["cli_key", "forget_gateway_rows", "store_inbox_entries"]


def cli_key(tenant: str, *scopes: str) -> str:
    """A new API key made with `tidings apikeys create` (its stdout is the key); its prefix
    is `key.split("_")[1]` (for the cleanup)."""
    out = io.StringIO()
    argv = ["apikeys", "create", tenant, *[a for s in scopes for a in ("--scope", s)]]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue().strip()


def store_inbox_entries(
    s: TidingsSettings, tenant: str, recipient: str, n: int
) -> list[Notification]:
    """`n` in-app notifications of `recipient` stored by the real InAppProvider (Postgres
    inbox, Redis publish), newest last, with their sends recorded with the dispatch record."""
    notes = []
    for i in range(n):
        u = uuid.uuid4().hex
        notes.append(Notification(
            id=notification_id(f"urn:test:{u}", f"evt-{u}", "welcome", recipient, "inapp"),
            event_id=f"evt-{u}", event_source=f"urn:test:{u}", event_type="order.created",
            tenant=tenant, rule_id="welcome", rule_version=1, template_id="welcome",
            template_version="1", catalog_version="c", channel="inapp", recipient=recipient,
            category="orders" if i % 2 else "news", user=recipient,
            event_time_ms=int(time.time() * 1000),
        ))  # fmt: skip

    async def store() -> None:
        p = InAppProvider(conninfo=s.postgres.conninfo(),
                          redis_url=s.redis.url.get_secret_value())  # fmt: skip
        log = DeliveryLog(s.postgres.conninfo())
        try:
            for i, x in enumerate(notes):
                await p.send(x, InAppContent(title=f"t{i}", body=f"b{i}", data={"i": i}))
                await log.record(x.id, "inapp", SentRecord("inbox", x.id, 1),
                                 notification=x.encode())  # fmt: skip
                await asyncio.sleep(0.002)  # distinct created_at, newest last
        finally:
            await p.close()
            await log.close()

    asyncio.run(store())
    return notes


def forget_gateway_rows(
    s: TidingsSettings, topics: Sequence[str], tenant: str, keys: Sequence[str],
    deliveries: Sequence[str],
) -> None:  # fmt: skip
    """Delete what a gateway test made: its topics, API keys (by prefix), and the rows of
    tenants named `tenant…` in recipients, audit log and inbox, and `deliveries` (ids)."""
    admin = AdminClient(s.kafka.client_config())
    for f in admin.delete_topics(list(topics), operation_timeout=30).values():
        f.result(timeout=30)
    with psycopg.connect(s.postgres.conninfo(), autocommit=True) as conn:
        conn.execute("delete from api_keys where prefix = any(%s)", (list(keys),))
        for table in ("recipients", "audit_log", "inbox"):
            conn.execute(f"delete from {table} where tenant like %s", (f"{tenant}%",))
        conn.execute(
            "delete from deliveries where notification_id = any(%s::uuid[])", (list(deliveries),)
        )
