"""Fixtures shared by every test: settings pointing at the local stack, unique names."""

from __future__ import annotations

import uuid

import pytest

from schemas.settings import TidingsSettings, load_settings


@pytest.fixture(scope="session")
def settings() -> TidingsSettings:
    """The settings tests run with: defaults plus TIDINGS_* from the environment."""
    return load_settings()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and table names of one test."""
    return uuid.uuid4().hex[:12]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passing test: fail the run if anything was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped; a skip is not a pass")
