"""Fixtures for the email tests: a real aiosmtpd sink on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.dev.smtp_sink import SmtpSink


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def sink(mail_dir: Path) -> Iterator[SmtpSink]:
    with SmtpSink(mail_dir, port=0) as s:
        yield s
