"""How many examples a fuzz test runs: its full count, scaled by TIDINGS_TEST_FUZZ_SCALE.

`make test` runs every fuzz test at full strength; `make unit`, the quick loop without the
stack, runs them at a quarter (TIDINGS_TEST_FUZZ_SCALE=0.25).
"""

from __future__ import annotations

import os


def examples(full: int) -> int:
    """`full` scaled by TIDINGS_TEST_FUZZ_SCALE (default 1), at least 10."""
    scale = float(os.environ.get("TIDINGS_TEST_FUZZ_SCALE") or 1.0)
    return max(10, int(full * scale))
