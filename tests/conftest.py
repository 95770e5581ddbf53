"""Fixtures shared by every test: settings pointing at the local stack, unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from schemas.settings import TidingsSettings, load_settings


@pytest.fixture(scope="session")
def settings(_settings_env_cleared: None) -> TidingsSettings:
    """The settings tests run with: defaults plus TIDINGS_* from the environment."""
    return load_settings()


# Where the stack is: the same for every test, so these may stay in the environment.
_STACK = ("TIDINGS_KAFKA__", "TIDINGS_POSTGRES__", "TIDINGS_REDIS__")


@pytest.fixture(scope="session", autouse=True)
def _settings_env_cleared() -> Iterator[None]:
    # Every test world writes its own settings (topics, groups, SMTP sink port, runtime) into
    # a config file. A caller's TIDINGS_* variable would override those files (env beats file):
    # a TIDINGS_SMTP__PORT meant for `make run` would send every test's mail elsewhere.
    keys = [
        k
        for k in os.environ
        if k.startswith("TIDINGS_")
        and ("__" in k or k == "TIDINGS_CONFIG")
        and not k.startswith(_STACK)
    ]
    saved = {k: os.environ.pop(k) for k in keys}
    # Many stage processes run at once in the tests: each serves /metrics on a free port
    # (its URL is Metrics.endpoint) instead of all fighting for 9464.
    os.environ["TIDINGS_OBSERVE__PORT"] = "0"
    yield
    os.environ.pop("TIDINGS_OBSERVE__PORT", None)
    os.environ.update(saved)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and table names of one test (remembered in
    `UNIQUES`: the integration session deletes the topics named with them at its end)."""
    u = uuid.uuid4().hex[:12]
    UNIQUES.add(u)
    return u


# Every `unique` this session handed out.
UNIQUES: set[str] = set()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passing test: fail the run if anything was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped; a skip is not a pass")
