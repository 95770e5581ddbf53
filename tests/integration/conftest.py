"""Integration fixtures: real Kafka, Postgres and Redis from `make up`, started once per session."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import TidingsSettings
from streams.cli.doctor import run_checks
from streams.state.db import apply_migrations
from tests.conftest import UNIQUES
from tests.integration.pipeline import World, make_world


@pytest.fixture(scope="session", autouse=True)
def _stack_is_up(settings: TidingsSettings) -> None:
    # Fail loudly (never skip): an integration run without services proves nothing.
    bad = [c for c in run_checks(settings, ["kafka", "postgres", "redis"]) if not c.ok]
    if bad:
        pytest.fail(
            "local stack not reachable; run `make up` first:\n" + "\n".join(c.line() for c in bad),
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def _topics_deleted_at_the_end(settings: TidingsSettings) -> Iterator[None]:
    # Test worlds make a dozen uuid topics each and leave them: thousands after a few runs,
    # which slows the local broker until topic creation times out ("not leader for
    # partition"). Deleted once, at the end, only those named with this session's uniques
    # (a session running beside this one keeps its own). Bounded; never fails the run.
    yield
    admin = AdminClient(settings.kafka.client_config())
    try:
        names = [t for t in admin.list_topics(timeout=10).topics
                 if UNIQUES.intersection(t.split("."))]  # fmt: skip
        futures = [f for i in range(0, len(names), 500)
                   for f in admin.delete_topics(names[i : i + 500],
                                                operation_timeout=30).values()]  # fmt: skip
        # One deadline for all (this runs in the last test's teardown, under its timeout);
        # the broker finishes what it accepted on its own.
        concurrent.futures.wait(futures, timeout=60)
    except Exception as exc:  # the broker may be gone (a test stopped it): say so, go on
        print(f"\nnote: the session's test topics were not deleted: {exc}")


@pytest.fixture(scope="session")
def kafka_admin(settings: TidingsSettings) -> AdminClient:
    """An admin client on the local broker."""
    return AdminClient(settings.kafka.client_config())


@pytest.fixture
def make_topic(kafka_admin: AdminClient, unique: str) -> Iterator[Callable[..., str]]:
    """Create uuid-named topics for one test; they are deleted afterwards."""
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"test.{prefix}.{unique}.{len(made)}"
        fut = kafka_admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=30)
        fut[name].result(timeout=30)
        made.append(name)
        return name

    yield make
    if made:
        for f in kafka_admin.delete_topics(made, operation_timeout=30).values():
            f.result(timeout=30)


@pytest.fixture
def pg(settings: TidingsSettings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A Postgres connection to the `tidings` database (autocommit)."""
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def tenant(
    settings: TidingsSettings, unique: str, pg: psycopg.Connection[tuple[object, ...]]
) -> Iterator[str]:
    """A tenant of this test's own on the migrated schema; afterwards its recipients (with
    their addresses) and its default preferences are deleted."""
    apply_migrations(settings.postgres.conninfo())
    t = f"t-{unique}"
    yield t
    pg.execute("delete from recipients where tenant = %s", (t,))
    pg.execute("delete from tenant_preferences where tenant = %s", (t,))


@pytest.fixture
def redis_client(settings: TidingsSettings) -> Iterator[redis.Redis]:
    """A Redis client on the local server."""
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    yield client
    client.close()


@pytest.fixture
def world(settings: TidingsSettings, unique: str, tmp_path: Path) -> Iterator[World]:
    """A per-test pipeline world: uuid topics and groups, catalog copy, SMTP sink."""
    w = make_world(settings, unique, tmp_path)
    yield w
    w.stop_all()
    w.sink.stop()


@pytest.fixture
def make_world_with(
    settings: TidingsSettings, unique: str, tmp_path: Path
) -> Iterator[Callable[..., World]]:
    """Like `world`, with runtime overrides and a slow sink when asked."""
    made: list[World] = []

    def make(**kw: Any) -> World:
        w = make_world(settings, unique, tmp_path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop_all()
        w.sink.stop()
