"""Golden renderings: every example event, every notification, every channel and locale.

Regenerate after an intended change with `TIDINGS_UPDATE_GOLDEN=1 pytest tests/unit/catalog`
and review the diff of tests/unit/catalog/golden/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from catalog import load_catalog
from catalog.dryrun import dry_run
from catalog.exceptions import RenderError
from schemas.envelope import Origin, decode_event

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "catalog"
GOLDEN = Path(__file__).resolve().parent / "golden"
NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
EVENTS = sorted((EXAMPLE / "events").glob("*.json"))
UPDATE = os.environ.get("TIDINGS_UPDATE_GOLDEN") == "1"


def renderings(event_file: Path) -> dict[str, str]:
    catalog = load_catalog(EXAMPLE)
    origin = Origin(topic="file", partition=0, offset=0, timestamp_ms=None)
    envelope = decode_event(event_file.read_bytes(), [], origin).as_cel()
    out: dict[str, str] = {}
    for item in dry_run(catalog, envelope, NOW):
        m = item.match
        for locale, content in item.content.items():
            assert not isinstance(content, RenderError), str(content)
            doc = {"recipient": m.recipient, "channel": m.channel, **content.model_dump()}
            name = f"{m.rule_id}.{m.channel}.{locale}.json"
            out[name] = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return out


@pytest.mark.parametrize("event_file", EVENTS, ids=[p.stem for p in EVENTS])
def test_golden(event_file: Path) -> None:
    got = renderings(event_file)
    assert got, f"{event_file.name} produced no notification"
    for name, text in got.items():
        path = GOLDEN / name
        if UPDATE:
            path.write_text(text, encoding="utf-8")
        assert path.exists(), f"{path} is missing; run with TIDINGS_UPDATE_GOLDEN=1"
        assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def test_golden_covers_every_channel_and_locale() -> None:
    names = [p.name for p in GOLDEN.glob("*.json")]
    channels = {n.split(".")[1] for n in names}
    locales = {n.split(".")[2] for n in names}
    assert {"email", "sms", "push", "slack", "webhook", "inapp"} <= channels
    assert {"default", "de", "de-AT"} <= locales
    expected = {n for f in EVENTS for n in renderings(f)}
    assert set(names) == expected, "golden files without a rendering: delete them"
