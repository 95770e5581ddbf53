"""Hot reload: atomic switches, bad catalogs refused, file watch, bundles."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from catalog.bundle import BundleError, decode_bundle, encode_bundle
from catalog.layout import read_tree
from streams.state.catalog import CatalogRef

NOW = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
RULES = """\
rules:
  - id: a
    version: 1
    events: [user.registered]
    recipients: [event.data.email]
    channels: [email]
    template: welcome
    category: c
    variables: {name: "'%(gen)s'"}
  - id: b
    version: 1
    events: [user.registered]
    recipients: ["'ops@example.com'"]
    channels: [email]
    template: welcome
    category: c
    variables: {name: "'%(gen)s'"}
"""


def write(root: Path, gen: str) -> None:
    (root / "rules.yaml").write_text(RULES % {"gen": gen})


def test_bad_catalog_is_refused_and_last_good_stays(make_catalog: Any) -> None:
    root = make_catalog({"rules.yaml": RULES % {"gen": "1"}})
    ref = CatalogRef.load(root)
    first = ref.current.version
    (root / "rules.yaml").write_text("rules: [{id: 1}]\n")
    assert ref.reload() is False
    assert ref.current.version == first
    assert ref.last_error and "rules.yaml:1:" in ref.last_error
    write(root, "2")
    switched: list[str] = []
    ref.add_listener(lambda c: switched.append(c.version))
    assert ref.reload() is True
    assert ref.last_error is None and switched == [ref.current.version] != [first]
    assert ref.reload() is False  # same content: no switch


def test_hot_reload_under_load_is_atomic_and_loses_nothing(make_catalog: Any) -> None:
    root = make_catalog({"rules.yaml": RULES % {"gen": "0"}})
    ref = CatalogRef.load(root)
    judged: list[tuple[str, frozenset[str]]] = []
    total = 0
    done = threading.Event()

    def worker() -> None:
        nonlocal total
        while not done.is_set():
            catalog = ref.current  # once per batch, as the route stage does
            for i in range(20):
                event = {"id": str(i), "type": "user.registered", "data": {"email": "a@x.io"}}
                matches = catalog.evaluate(event, NOW)
                assert len(matches) == 2
                judged.append((catalog.version, frozenset(m.variables["name"] for m in matches)))
                total += 1

    thread = threading.Thread(target=worker)
    thread.start()
    versions = {ref.current.version: "0"}
    for gen in ("1", "bad", "2", "3"):
        time.sleep(0.05)
        if gen == "bad":
            (root / "rules.yaml").write_text("rules: [{id: 1}]\n")
            assert ref.reload() is False
            continue
        write(root, gen)
        assert ref.reload() is True
        versions[ref.current.version] = gen
    time.sleep(0.05)
    done.set()
    thread.join()
    assert total == len(judged) > 0
    for version, names in judged:
        assert names == {versions[version]}, "an event was judged by a mix of versions"
    assert len({v for v, _ in judged}) >= 2


def test_file_watch_switches_and_refuses(make_catalog: Any) -> None:
    root = make_catalog({"rules.yaml": RULES % {"gen": "1"}})
    ref = CatalogRef.load(root)
    first = ref.current.version
    ref.start_watch(interval_s=0.02)
    try:
        (root / "rules.yaml").write_text("rules: [\n")
        wait(lambda: ref.last_error is not None)
        assert ref.current.version == first
        write(root, "2")
        wait(lambda: ref.current.version != first)
        assert ref.last_error is None
        evaluated = ref.current.evaluate(
            {"id": "e", "type": "user.registered", "data": {"email": "a@x.io"}}, NOW
        )
        assert evaluated[0].variables == {"name": "2"}
    finally:
        ref.stop()


def test_bundle_round_trip_and_tampering(example_path: Path) -> None:
    files = read_tree(example_path)
    data = encode_bundle(files, "examples/catalog")
    version, back = decode_bundle(data)
    assert back == files
    ref = CatalogRef.load(example_path)
    assert version == ref.current.version
    with pytest.raises(BundleError, match="hash to"):
        decode_bundle(data.replace(b'"version":"', b'"version":"0'))
    with pytest.raises(BundleError, match="tombstone"):
        decode_bundle(None)
    with pytest.raises(BundleError, match="invalid"):
        decode_bundle(encode_bundle({"../x": b""}))


def wait(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
