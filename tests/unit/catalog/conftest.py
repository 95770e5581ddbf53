"""Fixtures for the catalog tests: the example catalog and a builder for throwaway ones."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "catalog"

# A minimal valid rule file using the example's `welcome` template; tests edit copies of it.
VALID_RULES = """\
rules:
  - id: r1
    version: 1
    events: [user.registered]
    recipients: [event.data.email]
    channels: [email]
    template: welcome
    category: onboarding
    variables:
      name: event.data.name
"""

MakeCatalog = Callable[..., Path]


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE


@pytest.fixture
def make_catalog(tmp_path: Path) -> MakeCatalog:
    """Write `files` (dedented) into a fresh catalog that has the example's templates."""

    def make(files: dict[str, str], *, example_templates: bool = True) -> Path:
        root = tmp_path / "cat"
        if example_templates and not (root / "templates").exists():
            shutil.copytree(EXAMPLE / "templates", root / "templates")
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return make


@pytest.fixture
def valid_rules() -> str:
    return VALID_RULES
