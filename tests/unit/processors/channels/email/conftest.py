"""Fixtures for the email tests: a real aiosmtpd sink on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.channels.email import smtp as smtp_module
from streams.dev import smtp_sink
from streams.dev.smtp_sink import SmtpSink


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def sink(mail_dir: Path) -> Iterator[SmtpSink]:
    with SmtpSink(mail_dir, port=0) as s:
        yield s


@pytest.fixture(params=[False, True], ids=["lockstep", "pipelining"])
def sink_pipelining(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run a test against a sink without and with PIPELINING; returns the pipelined-send count.

    aiosmtpd reads commands in order from a stream, so it serves a pipelining client correctly;
    it just never advertises the extension. The pipelining variant adds it to the EHLO reply.
    """
    calls: list[int] = []
    if request.param:
        original = smtp_sink._Handler.handle_EHLO

        async def handle_EHLO(  # aiosmtpd's hook name
            self: Any, server: Any, session: Any, envelope: Any, hostname: str, responses: Any
        ) -> list[str]:
            responses = await original(self, server, session, envelope, hostname, responses)
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        monkeypatch.setattr(smtp_sink._Handler, "handle_EHLO", handle_EHLO)
        pipelined = smtp_module.pipelined_sendmail

        async def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return await pipelined(*args, **kwargs)

        monkeypatch.setattr(smtp_module, "pipelined_sendmail", counting)
    return calls
