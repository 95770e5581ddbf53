"""`tidings doctor` names each service and fails with the reason when one is unreachable."""

from __future__ import annotations

import socket

import pytest

from streams.cli.main import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_reports_unreachable_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    monkeypatch.setenv("TIDINGS_POSTGRES__PORT", str(port))
    monkeypatch.setenv("TIDINGS_REDIS__URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("TIDINGS_SMTP__PORT", str(port))
    rc = main(["doctor", "--service", "postgres", "--service", "redis", "--service", "smtp"])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["postgres", "redis", "smtp"]
    assert all("FAIL" in line and str(port) in line for line in lines)
    assert "unhealthy: postgres, redis, smtp" in err


def test_invalid_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDINGS_POSTGRES__PORT", "not-a-port")
    assert main(["doctor"]) == 2
    assert "invalid settings" in capsys.readouterr().err
