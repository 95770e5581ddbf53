"""Every room of `streams/` re-exports its public API through `__init__` (as httpx does)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import streams

ROOMS = ["cli", "dev", "dlq", "http", "observe", "runtime", "stages", "state"]


@pytest.mark.parametrize("room", ROOMS)
def test_every_name_in_all_is_importable_and_unique(room: str) -> None:
    pkg = importlib.import_module(f"streams.{room}")
    names = pkg.__all__
    assert len(names) == len(set(names)), f"streams.{room}.__all__ names each once"
    missing = [n for n in names if not hasattr(pkg, n)]
    assert not missing, f"streams.{room}.__all__ names what it doesn't export: {missing}"


@pytest.mark.parametrize("room", [r for r in ROOMS if r not in ("cli", "dev")])
def test_each_modules_public_names_are_re_exported_by_its_room(room: str) -> None:
    pkg = importlib.import_module(f"streams.{room}")
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg:
            continue  # state/migrations: SQL files, no Python API
        mod = importlib.import_module(f"streams.{room}.{info.name}")
        public = getattr(mod, "__all__", None)
        assert public is not None, f"streams.{room}.{info.name} declares __all__"
        left_out = [n for n in public if n not in pkg.__all__]
        assert not left_out, f"streams.{room} doesn't re-export {info.name}: {left_out}"


def test_the_rooms_are_all_there_is() -> None:
    found = {m.name for m in pkgutil.iter_modules(streams.__path__) if m.ispkg}
    assert found == set(ROOMS), "a new folder in streams/ goes into docs/architecture.md too"
