"""docker-compose.yml parses and validates against the Compose Specification schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_validates_against_spec() -> None:
    schema = json.loads((ROOT / "tests/fixtures/compose-spec.json").read_text())
    # The vendored schema names draft 2019-09 with a trailing '#', which jsonschema
    # does not recognise on its own; pick the validator explicitly.
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_schema_rejects_a_broken_compose_file() -> None:
    schema = json.loads((ROOT / "tests/fixtures/compose-spec.json").read_text())
    broken = _compose()
    broken["services"]["kafka"]["ports"] = {"not": "a list"}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_compose_uses_the_local_stack_ports() -> None:
    services = _compose()["services"]
    published = {name: [p.split(":")[1] for p in svc["ports"]] for name, svc in services.items()}
    assert published == {"kafka": ["19092"], "postgres": ["15432"], "redis": ["16379"]}
    pom = (ROOT / "deploy/local/kafka/pom.xml").read_text()
    version = services["kafka"]["image"].split(":")[1]
    assert f"<kafka.version>{version}</kafka.version>" in pom, "compose and make up pin one Kafka"
