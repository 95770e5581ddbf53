"""The quick chaos subset (about 2 minutes) inside `make test`: kill -9 of deliver and of route,
Redis FLUSHALL mid-burst, and a broker bounce, each against the private chaos stack in its own
network namespace (`python -m tests.chaos.runner --quick`). The checker's verdict must be clean:
nothing lost, no duplicate but those it allows, no duplicate committed status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.stack import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_quick_chaos_loses_nothing_and_duplicates_only_as_allowed(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    p = subprocess.run(
        [sys.executable, "-m", "tests.chaos.runner", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    log = p.stdout[-6000:] + p.stderr[-3000:]
    assert out.exists(), f"the chaos runner wrote no results (exit {p.returncode}):\n{log}"
    results = json.loads(out.read_text())
    assert len(results) == 4, log
    bad = {
        r["name"]: r["report"]["notes"] + r["crashes"]
        for r in results
        if r["report"]["lost"] or r["report"]["dup_unallowed"] or r["report"]["dup_statuses"]
        or r["report"]["unexpected"]
    }  # fmt: skip
    assert not bad, f"chaos verdicts:\n{json.dumps(bad, indent=1)}\n{log}"
    assert p.returncode == 0, log
