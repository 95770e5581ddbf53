"""InAppProvider against the local Postgres and Redis: stored once, published, idempotent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from processors.channels.inapp import InAppProvider
from processors.exceptions import PermanentSendError, RetryableSendError
from schemas.content import InAppContent
from schemas.settings import TidingsSettings
from streams.state.db import apply_migrations
from tests.unit.processors.fakes import notification

CONTENT = InAppContent(title="Order shipped", body="On its way", data={"order": 42})


@pytest.fixture
def table(
    pg: psycopg.Connection[tuple[object, ...]], unique: str, settings: TidingsSettings
) -> Iterator[str]:
    # The shipped migration defines the inbox; each test gets a copy of it to itself.
    apply_migrations(settings.postgres.conninfo())
    name = f"inbox_test_{unique}"
    pg.execute(f'CREATE TABLE "{name}" (LIKE inbox INCLUDING ALL)')
    yield name
    pg.execute(f'DROP TABLE IF EXISTS "{name}"')


def provider(settings: TidingsSettings, table: str, **kw: Any) -> InAppProvider:
    return InAppProvider(
        conninfo=settings.postgres.conninfo(), redis_url=settings.redis.url.get_secret_value(),
        table=table, **kw,
    )  # fmt: skip


def test_stored_once_and_published(
    settings: TidingsSettings,
    table: str,
    pg: psycopg.Connection[tuple[object, ...]],
    redis_client: redis.Redis,
) -> None:
    n = notification("in-1", channel="inapp", recipient="user-7", tenant="acme", category="orders")
    p = provider(settings, table)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(p.channel_for(n))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]

    async def go() -> list[str]:
        try:
            return [await p.send(n, CONTENT), await p.send(n, CONTENT)]  # retry: same id
        finally:
            await p.close()

    assert asyncio.run(go()) == ["in-1", "in-1"]
    rows = pg.execute(
        f"SELECT notification_id, tenant, recipient, category, title, body, data, read_at "
        f'FROM "{table}"'
    ).fetchall()
    assert rows == [
        ("in-1", "acme", "user-7", "orders", "Order shipped", "On its way", {"order": 42}, None)
    ]
    got = [pubsub.get_message(timeout=2) for _ in range(2)]
    pubsub.close()
    messages = [json.loads(m["data"]) for m in got if m]
    assert len(messages) == 2  # published on each attempt; the gateway dedups by id
    assert p.channel_for(n) == "tidings:inbox:acme:user-7"
    first = messages[0]
    assert (first["id"], first["title"], first["body"], first["data"]) == (
        "in-1", "Order shipped", "On its way", {"order": 42},
    )  # fmt: skip


def test_missing_table_is_retryable_with_the_fix(settings: TidingsSettings, unique: str) -> None:
    p = provider(settings, f"no_such_inbox_{unique}")

    async def go() -> None:
        try:
            await p.send(notification("x", channel="inapp"), CONTENT)
        finally:
            await p.close()

    with pytest.raises(RetryableSendError, match="inbox migration") as info:
        asyncio.run(go())
    assert info.value.code == "inbox_unavailable"


def test_a_burst_is_stored_in_batches_and_one_bad_row_fails_alone(
    settings: TidingsSettings,
    table: str,
    pg: psycopg.Connection[tuple[object, ...]],
) -> None:
    p = provider(settings, table)
    statements: list[int] = []
    real = p._store_batch

    async def counting(rows: list[Any]) -> list[Any]:
        statements.append(len(rows))
        return await real(rows)

    p._stores._run = counting  # a spy on the batch call; Postgres is the real one
    good = [notification(f"b-{i}", channel="inapp", recipient=f"user-{i}") for i in range(100)]
    # A NUL character is a text Postgres refuses (DataError): that send alone must fail.
    bad = InAppContent(title="bad \x00 title", body="x", data={})
    bad_n = notification("b-bad", channel="inapp", recipient="user-bad")

    async def go() -> list[object]:
        try:
            sends = [p.send(n, CONTENT) for n in good[:50]]
            sends.append(p.send(bad_n, bad))
            sends += [p.send(n, CONTENT) for n in good[50:]]
            return list(await asyncio.gather(*sends, return_exceptions=True))
        finally:
            await p.close()

    results = asyncio.run(go())
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], PermanentSendError), failed
    assert "fix the template output" in str(failed[0])
    stored = pg.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert stored is not None and stored[0] == 100, "every good row stored, the bad one not"
    assert len(statements) <= 3, f"101 sends of one moment took {len(statements)} statements"


def test_redis_away_still_stores_and_returns_and_logs_the_lost_wakeup(
    settings: TidingsSettings,
    table: str,
    pg: psycopg.Connection[tuple[object, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The publish is not awaited by `send`: stored is delivered. A Redis that refuses the
    # connection (nothing listens on port 1) must not fail the send, and must be logged.
    p = InAppProvider(
        conninfo=settings.postgres.conninfo(), redis_url="redis://127.0.0.1:1/0",
        table=table, timeout_s=1.0,
    )  # fmt: skip
    n = notification("in-away", channel="inapp", recipient="user-9")

    async def go() -> str:
        try:
            return await p.send(n, CONTENT)
        finally:
            await p.close()  # waits for the publish in flight

    with caplog.at_level("WARNING", logger="processors.channels.inapp"):
        assert asyncio.run(go()) == "in-away"
    assert pg.execute(f'SELECT count(*) FROM "{table}"').fetchone() == (1,)
    assert any("stored but not published" in r.getMessage() for r in caplog.records)
