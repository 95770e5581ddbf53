"""`tidings tenants defaults` against the real Postgres: checked, stored, shown."""

from __future__ import annotations

import json

import pytest

from schemas.settings import TidingsSettings
from streams.cli.main import main
from streams.state.directory import Directory

pytestmark = pytest.mark.integration


def test_defaults_are_checked_against_the_catalog_then_stored_and_shown(
    tenant: str, settings: TidingsSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tenants", "defaults", tenant]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["required_categories"] == [] and shown["preferences"]["categories"] == []

    assert main(["tenants", "defaults", tenant, "--set", '{"categories": ["promos"]}']) == 2
    err = capsys.readouterr().err
    assert "preferences.categories: unknown category 'promos'" in err
    assert "billing, onboarding, operations, security, shipping" in err, "the valid ones"
    assert main(["tenants", "defaults", tenant, "--required", "nope"]) == 2
    assert "--required: unknown category 'nope'" in capsys.readouterr().err
    assert main(["tenants", "defaults", tenant, "--set", '{"channels": ["fax"]}']) == 2
    assert "unknown channel" in capsys.readouterr().err

    prefs = '{"categories": ["onboarding"], "quiet_hours": {"start": "22:00", "end": "07:00"}}'
    assert main(["tenants", "defaults", tenant, "--set", prefs, "--required", "security"]) == 0
    capsys.readouterr()
    d = Directory(settings.postgres.conninfo())
    try:
        stored, required = d.tenant_defaults([tenant])[tenant]
    finally:
        d.close()
    assert stored.categories == ("onboarding",) and required == ("security",)
    assert stored.quiet_hours is not None and stored.quiet_hours.start == "22:00"
    assert main(["tenants", "defaults", tenant]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["preferences"]["categories"] == ["onboarding"]
    assert shown["required_categories"] == ["security"]
