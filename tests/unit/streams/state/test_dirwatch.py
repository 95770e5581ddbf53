"""DirWatch on a real directory: asleep while nothing changes, awake on a write, a new file in a
new subdirectory, a rename and a delete."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from streams.state.dirwatch import DirWatch


@pytest.fixture
def watch(tmp_path: Path) -> DirWatch:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text("a: 1\n")
    w = DirWatch(tmp_path)
    if not w.available:
        pytest.fail("inotify is unavailable on this Linux machine; DirWatch falls back to polling")
    return w


def test_nothing_changed_means_no_wake_up(watch: DirWatch) -> None:
    t0 = time.monotonic()
    assert watch.wait(0.2) is False
    assert time.monotonic() - t0 >= 0.15, "it slept until the timeout"
    watch.close()


def test_a_write_wakes_it(watch: DirWatch, tmp_path: Path) -> None:
    (tmp_path / "rules" / "a.yaml").write_text("a: 2\n")
    assert watch.wait(2.0) is True
    assert watch.wait(0.1) is False, "the events were drained"
    watch.close()


def test_a_file_in_a_new_subdirectory_wakes_it(watch: DirWatch, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    assert watch.wait(2.0) is True  # the new directory, now watched too
    (tmp_path / "templates" / "t.txt").write_text("hi")
    assert watch.wait(2.0) is True
    watch.close()


def test_a_rename_and_a_delete_wake_it(watch: DirWatch, tmp_path: Path) -> None:
    os.rename(tmp_path / "rules" / "a.yaml", tmp_path / "rules" / "b.yaml")
    assert watch.wait(2.0) is True
    (tmp_path / "rules" / "b.yaml").unlink()
    assert watch.wait(2.0) is True
    watch.close()
    assert not watch.available
    assert watch.wait(0.0) is True, "closed: the caller polls"
