"""Property: whatever bytes a rule file or template holds, loading yields a Catalog or a
CatalogLoadError, never any other exception."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog import Catalog, CatalogLoadError, Rule, load_catalog
from tests.fuzz import examples

FIELDS = [*Rule.model_fields, "rules", "whne", "<<", "user", "email", "phone", "url"]
SNIPPETS = [
    "event.data.x",
    "event.data.total > 0",
    "[",
    "email",
    "sms",
    "welcome",
    "order.*",
    "'a'",
    "now",
    "1 +",
    "true",
    "event.data.items.map(i, i.name)",
    "{{ x }}",
    "",
    " ",
    "r1",
    "{b'k': 1}",
    "event.data.?a.orValue(1)",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(SNIPPETS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)
rules = st.dictionaries(st.sampled_from(FIELDS), values, max_size=12)
documents = st.one_of(st.fixed_dictionaries({"rules": st.lists(rules, max_size=3)}), values)
TOKENS = [
    "rules:",
    "\n",
    "  ",
    "- ",
    "id: ",
    "when: ",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "&a ",
    "*a",
    "!!timestamp ",
    "!!python/object:os.system ",
    "!!binary ",
    "!!int ",
    "'",
    '"',
    "|",
    ">",
    "#",
    "<<: ",
    "? ",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "2024-02-30",
    "\t",
    "\\",
    "\x00",
    "\ufeff",
    "\\U00110000",
    "\\x",
    "!!float ",
    "!!set ",
    "!!omap ",
]
token_soup = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), max_size=40).map("".join)


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    text = yaml.safe_dump(draw(documents), allow_unicode=draw(st.booleans()))
    if text and draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 5))
        text = text[:at] + draw(st.sampled_from(TOKENS) | st.text(max_size=3)) + text[at + cut :]
    return text


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    # Only what the snippets name: every load compiles every template, and there are many.
    source = Path(__file__).resolve().parents[3] / "examples/catalog/templates"
    for name in ("welcome", "order-confirmation", "_partials", "_layouts"):
        shutil.copytree(source / name, root / "templates" / name)
    return root


def load_never_crashes(root: Path, name: str, content: str | bytes) -> None:
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    (root / name).write_bytes(data)
    try:
        result: Any = load_catalog(root)
    except CatalogLoadError as err:
        assert err.problems
        for problem in err.problems:
            assert problem.file.startswith(str(root))
            assert problem.line >= 0 and problem.col >= 0
            assert str(problem)
    else:
        assert isinstance(result, Catalog)


@settings(max_examples=examples(300), deadline=None)
@given(text=mutated_yaml())
def test_structured_yaml_never_crashes(fuzz_root: Path, text: str) -> None:
    load_never_crashes(fuzz_root, "rules.yaml", text)


@settings(max_examples=examples(300), deadline=None)
@given(text=token_soup)
def test_yaml_token_soup_never_crashes(fuzz_root: Path, text: str) -> None:
    load_never_crashes(fuzz_root, "rules.yaml", text)


@settings(max_examples=examples(100), deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(fuzz_root: Path, data: bytes) -> None:
    load_never_crashes(fuzz_root, "rules.yaml", data)


@settings(max_examples=examples(100), deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [
                "{{",
                "}}",
                "{%",
                "%}",
                "{#",
                "#}",
                " if ",
                " for x in ",
                " endif ",
                " endfor ",
                " include 'a' ",
                "|",
                "(",
                ")",
                " x ",
                "\n",
                "'",
            ]
        )
        | st.text(max_size=3),
        max_size=30,
    ).map("".join)
)
def test_template_soup_never_crashes(fuzz_root: Path, text: str) -> None:
    (fuzz_root / "rules.yaml").write_text("rules: []\n")
    load_never_crashes(fuzz_root, "templates/welcome/email/body.txt.j2", text)


def test_nan_and_inf_in_rule_values_are_reported(fuzz_root: Path) -> None:
    text = yaml.safe_dump({"rules": [{"id": "r", "version": math.inf, "when": math.nan}]})
    with pytest.raises(CatalogLoadError):
        load_catalog_with(fuzz_root, text)


def test_out_of_range_escape_is_reported(fuzz_root: Path) -> None:
    with pytest.raises(CatalogLoadError, match=r"rules.yaml:1:\d+: YAML error: chr\(\) arg"):
        load_catalog_with(fuzz_root, '"\\U00110000"\n')


def test_deep_nesting_is_reported(fuzz_root: Path) -> None:
    with pytest.raises(CatalogLoadError, match="nests too deeply"):
        load_catalog_with(fuzz_root, "rules: " + "[" * 5000 + "]" * 5000)


def load_catalog_with(root: Path, text: str) -> Catalog:
    (root / "rules.yaml").write_text(text)
    return load_catalog(root)
