"""A test guard: any connect to a non-loopback address fails the test before a socket exists.

Import `only_loopback` into a test module and mark it `usefixtures("only_loopback")`: even a broken
SSRF check can then never send traffic off this machine.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpcore
import pytest


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every real connect; fail on any non-loopback target before connecting."""
    seen: list[str] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def guarded(self: Any, host: str, port: int, **kw: Any) -> Any:
        seen.append(host)
        assert ipaddress.ip_address(host).is_loopback, f"test tried to connect to {host}"
        return await real(self, host, port, **kw)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", guarded)
    return seen
