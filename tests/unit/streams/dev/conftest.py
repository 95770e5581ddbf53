"""Fixtures for the dev tools' tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.npm import free_port as peers_free_port


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on right now."""
    return peers_free_port()


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    """Where the SMTP sink under test keeps its .eml files."""
    d = tmp_path / "mail"
    d.mkdir()
    return d
