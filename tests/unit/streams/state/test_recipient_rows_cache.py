"""The import's fast CSV path remembers attributes and preferences cells: same answers."""

from __future__ import annotations

import csv
from pathlib import Path

from streams.state.directory_rows import prepare
from streams.state.recipient_rows import parse_csv_row, read_prepared

ROWS = [
    ("u1", '"{""plan"": ""pro""}"', '"{""categories"": [""marketing""]}"'),
    ("u2", '"{""plan"": ""pro""}"', '"{""channels"": [""fax""]}"'),
    ("u3", '"{""plan"": ""pro""}"', '"{""categories"": [""marketing""]}"'),
    ("u4", "nope", '"{""channels"": [""fax""]}"'),
    ("u5", "nope", ""),
    ("u6", "", '"{""categories"": [""marketing""]}"'),
]


def test_a_cell_seen_again_is_laid_out_or_refused_as_the_first_time(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    lines = ["id,attributes,preferences"] + [",".join(r) for r in ROWS]
    f.write_text("\n".join(lines) + "\n")
    got = list(read_prepared(f))
    with f.open(newline="") as fh:
        want = []
        for line, row in enumerate(csv.DictReader(fh), 2):
            try:
                want.append((line, prepare(parse_csv_row(row))))
            except ValueError as exc:
                want.append((line, str(exc)))
    assert got == want
    assert [isinstance(r, str) for _, r in got] == [False, True, False, True, True, False]
