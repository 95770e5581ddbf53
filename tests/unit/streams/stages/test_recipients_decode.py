"""decode_change of a tenant's defaults record: checked like a recipient's preferences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog, load_catalog
from schemas.recipient import TENANT_DEFAULTS, Preferences, tenant_defaults_key
from streams.stages.recipients import decode_change

EXAMPLES = Path(__file__).resolve().parents[4] / "examples/catalog"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLES)


def _record(**data: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "c1", "source": "s",
                       "type": TENANT_DEFAULTS, "data": data}).encode()  # fmt: skip


def test_a_tenant_defaults_record_decodes(catalog: Catalog) -> None:
    raw = _record(tenant="acme", preferences={"categories": ["billing"]},
                  required_categories=["security"])  # fmt: skip
    change = decode_change(b"acme/", raw, catalog)
    assert change is not None
    d = change.tenant_defaults()
    assert (d.tenant, d.preferences, d.required_categories) == (
        "acme", Preferences(categories=("billing",)), ("security",),
    )  # fmt: skip
    assert tenant_defaults_key("") == b"/"


@pytest.mark.parametrize(
    ("key", "data", "says"),
    [
        (b"other/", {"tenant": "acme"}, "doesn't match its data"),
        (b"acme/", {"tenant": "acme", "preferences": {"categories": ["promos"]}},
         "unknown category 'promos'"),
        (b"acme/", {"tenant": "acme", "required_categories": ["vip"]},
         "required_categories: unknown category 'vip'"),
        (b"acme/", {"tenant": "acme", "colour": "red"}, "colour"),
        (b"acme/", {"tenant": "acme", "required_categories": ["x"] * 257}, "257"),
        # `a/b/` is also recipient `b/` of tenant `a`: compaction would keep only one.
        (b"a/b/", {"tenant": "a/b"}, "tenant"),
    ],
)  # fmt: skip
def test_a_bad_tenant_defaults_record_says_what_is_wrong(
    catalog: Catalog, key: bytes, data: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        decode_change(key, _record(**data), catalog)
