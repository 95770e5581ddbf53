"""Migrations on a real Postgres: a stage refuses a database that lacks one, and says the fix."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from schemas.settings import TidingsSettings
from streams.exceptions import FatalStageError
from streams.state.db import apply_migrations, migrations, require_migrations

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_db(
    settings: TidingsSettings, pg: psycopg.Connection[tuple[object, ...]], unique: str
) -> Iterator[str]:
    """The conninfo of a new, empty database (dropped afterwards)."""
    name = f"tidings_mig_{unique}"
    pg.execute(f'create database "{name}"')
    try:
        yield settings.model_copy(
            update={"postgres": settings.postgres.model_copy(update={"database": name})}
        ).postgres.conninfo()
    finally:
        pg.execute(f'drop database "{name}" with (force)')


def test_a_stage_refuses_a_database_without_the_migrations_then_starts_after_migrate(
    empty_db: str,
) -> None:
    with pytest.raises(FatalStageError, match="tidings db migrate") as err:
        require_migrations(empty_db, "deliver")
    shipped = migrations()
    assert f"{shipped[-1].version:04d}_{shipped[-1].name}" in str(err.value)
    assert [m.version for m in apply_migrations(empty_db)] == [m.version for m in shipped]
    require_migrations(empty_db, "deliver")  # no error now
    assert apply_migrations(empty_db) == []  # and a second migrate does nothing


def test_one_missing_migration_is_named(empty_db: str) -> None:
    apply_migrations(empty_db)
    last = migrations()[-1]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("delete from schema_migrations where version = %s", (last.version,))
    with pytest.raises(FatalStageError) as err:
        require_migrations(empty_db, "audit")
    assert str(err.value).startswith(f"audit: the database lacks migration(s) {last.version:04d}_")
