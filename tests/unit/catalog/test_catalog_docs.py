"""docs/catalog.md documents every rule field, CEL function, filter and channel file."""

from __future__ import annotations

from pathlib import Path

from catalog import Rule, cel
from catalog.channels import SPECS
from catalog.i18n import FILTERS

DOC = (Path(__file__).resolve().parents[3] / "docs" / "catalog.md").read_text(encoding="utf-8")


def test_every_rule_field_is_documented() -> None:
    assert [f for f in Rule.model_fields if f"`{f}`" not in DOC] == []


def test_every_cel_function_is_documented_and_compiles() -> None:
    assert [f for f in cel.FUNCTIONS if f"`{f}(" not in DOC] == []
    for example in (
        "bucket(event.data.user_id, 100) < 10",
        "sha256(event.data.reset_token)",
        "emailDomain(event.data.email) != 'example.com'",
        "isEmail(event.data.contact) ? event.data.contact : []",
        "isPhone(event.data.phone)",
        "timestamp(event.time) > now - duration('24h')",
        "now.getHours('Europe/Berlin') < 8",
    ):
        assert example in DOC
        cel.compile_expression(example)


def test_every_filter_and_channel_file_is_documented() -> None:
    assert [f for f in FILTERS if f"| {f}" not in DOC and f"\\| {f}" not in DOC] == []
    files = {name for spec in SPECS.values() for name in spec.files}
    assert [f for f in files if f not in DOC] == []
