"""Settings: defaults point at the local stack; env beats the config file; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.settings import TidingsSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("TIDINGS_"):
            monkeypatch.delenv(k)


def test_defaults_point_at_the_local_stack() -> None:
    s = TidingsSettings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert (s.postgres.host, s.postgres.port, s.postgres.database) == (
        "127.0.0.1",
        15432,
        "tidings",
    )
    assert s.redis.url.get_secret_value() == "redis://127.0.0.1:16379/0"
    assert s.topics.dispatch("email") == "notification.dispatch.email"


def test_env_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("TIDINGS_TOPICS__PARTITIONS", "12")
    s = TidingsSettings()
    assert s.kafka.bootstrap_servers == "broker:9092"
    assert s.topics.partitions == 12


def test_config_file_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tidings.yaml"
    cfg.write_text("postgres:\n  port: 6543\n  password: s3cret\nsmtp:\n  port: 2525\n")
    monkeypatch.setenv("TIDINGS_SMTP__PORT", "2626")
    s = load_settings(str(cfg))
    assert s.postgres.port == 6543
    assert s.smtp.port == 2626, "environment wins over the file"
    assert "s3cret" not in repr(s), "secrets never show in reprs or logs"
    assert "s3cret" in s.postgres.conninfo()


def test_toml_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tidings.toml"
    cfg.write_text('[kafka]\nclient_id = "from-toml"\n')
    assert load_settings(str(cfg)).kafka.client_id == "from-toml"


def test_settings_are_frozen_and_strict(tmp_path: Path) -> None:
    s = TidingsSettings()
    with pytest.raises(ValidationError):
        s.kafka.client_id = "x"  # type: ignore[misc]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: typo\n")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        load_settings(str(cfg))


def test_missing_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(str(tmp_path / "nope.yaml"))
