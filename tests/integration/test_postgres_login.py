"""A login the real Postgres refuses is a setting to fix: FatalStageError at once, no retry loop;
nothing listening is still an outage, ridden out as before."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown, FatalStageError, StageStopping
from streams.runtime.metrics import Metrics
from streams.runtime.outage import Outage
from streams.runtime.stage import StageContext
from streams.stages.audit import AuditStage
from streams.state import DeliveryLog
from streams.state.db import apply_migrations, wait_for_migrations

pytestmark = pytest.mark.integration

# Well under one connect timeout plus a backoff: a refusal must not wait anything out.
_QUICK_S = 3.0


def _with_pg(settings: TidingsSettings, **pg: Any) -> TidingsSettings:
    if "password" in pg:
        pg["password"] = SecretStr(pg["password"])
    return settings.model_copy(update={"postgres": settings.postgres.model_copy(update=pg)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("password", "not-the-password", "postgres.password (env TIDINGS_POSTGRES__USER"),
        ("user", "no_such_role", "TIDINGS_POSTGRES__PASSWORD"),
        ("database", "no_such_database", "postgres.database (env TIDINGS_POSTGRES__DATABASE)"),
    ],
)
def test_a_refused_login_stops_the_stage_at_once(
    settings: TidingsSettings, setting: str, value: str, named: str
) -> None:
    bad = _with_pg(settings, **{setting: value})
    outage = Outage("audit", "postgres", limit_s=None)
    started = time.monotonic()
    with pytest.raises(FatalStageError) as err:
        wait_for_migrations(bad.postgres.conninfo(), "audit", threading.Event(), outage)
    assert time.monotonic() - started < _QUICK_S
    assert not outage.down, "a refused login is not counted as an outage"
    assert isinstance(err.value.__cause__, psycopg.OperationalError)
    text = str(err.value)
    assert text.startswith("audit: Postgres refused the login") and named in text
    assert "not-the-password" not in text


def test_every_connect_site_refuses_wrong_credentials(settings: TidingsSettings) -> None:
    bad = _with_pg(settings, password="not-the-password")
    started = time.monotonic()
    with pytest.raises(FatalStageError, match=r"^migrate: .*postgres\.password"):
        apply_migrations(bad.postgres.conninfo())
    with pytest.raises(FatalStageError, match=r"^audit: .*postgres\.password"):
        AuditStage(StageContext(bad, threading.Event(), Metrics())).run()

    async def deliveries() -> None:
        log = DeliveryLog(bad.postgres.conninfo())
        try:
            with pytest.raises(FatalStageError, match=r"^deliveries: .*postgres\.password"):
                await log.sent(["00000000-0000-0000-0000-000000000001"])
            with pytest.raises(FatalStageError, match=r"^deliveries: "):
                await asyncio.wait_for(log.delivery("00000000-0000-0000-0000-000000000001"), 5)
        finally:
            await log.close()

    asyncio.run(deliveries())
    assert time.monotonic() - started < 4 * _QUICK_S


def test_nothing_listening_is_still_an_outage_ridden_out(settings: TidingsSettings) -> None:
    down = _with_pg(settings, port=_free_port(), connect_timeout_s=1)
    outage = Outage("audit", "postgres", limit_s=None, base_s=0.05, cap_s=0.1)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with pytest.raises(StageStopping):
        wait_for_migrations(down.postgres.conninfo(), "audit", stop, outage)
    assert outage.down, "retried with backoff until asked to stop"

    async def deliveries() -> None:
        log = DeliveryLog(down.postgres.conninfo())
        try:
            with pytest.raises(DependencyDown):
                await log.sent(["00000000-0000-0000-0000-000000000001"])
        finally:
            await log.close()

    asyncio.run(deliveries())
