"""`login_fix`: which failures are a refused login (a setting to fix) and which an outage."""

from __future__ import annotations

import psycopg
import pytest

from streams.exceptions import FatalStageError
from streams.state.db import check_login, login_fix

_AT = 'connection failed: connection to server at "127.0.0.1", port 15432 failed: '


@pytest.mark.parametrize(
    ("exc", "fix"),
    [
        # On connect psycopg leaves sqlstate None: libpq's message decides.
        (psycopg.OperationalError(_AT + 'FATAL:  password authentication failed for user "t"'),
         "fix postgres.user / postgres.password (env TIDINGS_POSTGRES__USER / "
         "TIDINGS_POSTGRES__PASSWORD)"),
        (psycopg.OperationalError(_AT + 'FATAL:  database "nope" does not exist'),
         "fix postgres.database (env TIDINGS_POSTGRES__DATABASE)"),
        (psycopg.OperationalError(_AT + 'FATAL:  role "nope" does not exist'),
         "fix postgres.user (env TIDINGS_POSTGRES__USER)"),
        # With a SQLSTATE, its class decides, whatever the (maybe translated) text.
        (psycopg.errors.InvalidPassword("Passwort-Authentifizierung fehlgeschlagen"),
         "fix postgres.user / postgres.password (env TIDINGS_POSTGRES__USER / "
         "TIDINGS_POSTGRES__PASSWORD)"),
        (psycopg.errors.InvalidCatalogName("Datenbank existiert nicht"),
         "fix postgres.database (env TIDINGS_POSTGRES__DATABASE)"),
    ],
)  # fmt: skip
def test_refused_logins_name_the_setting(exc: psycopg.Error, fix: str) -> None:
    assert login_fix(exc) == fix
    with pytest.raises(FatalStageError, match=r"^audit: Postgres refused the login") as err:
        check_login(exc, "audit")
    assert err.value.__cause__ is exc and fix in str(err.value)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError(_AT + "Connection refused\n\tIs the server running on that host?"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        TimeoutError("timed out"),
    ],
)
def test_outages_are_not_refusals(exc: BaseException) -> None:
    assert login_fix(exc) is None
    check_login(exc, "audit")  # returns: the caller treats it as an outage
