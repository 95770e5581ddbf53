"""Fixtures for the deploy/ tests: the pinned tools from deploy/tools.sh, the built overlays.

The tools live in `.local/tools/bin` (or `$TIDINGS_LOCAL_DIR/tools/bin`); `make test` runs
`bash deploy/tools.sh` first. A missing tool fails the test that needs it, with the fix.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# What `kustomize build` is run on: the base and every overlay.
TARGETS = ("base", "overlays/dev", "overlays/prod")


def tool(name: str) -> Path:
    """The path of a tool deploy/tools.sh installs; fails the test when it is missing."""
    local = Path(os.environ.get("TIDINGS_LOCAL_DIR") or ROOT / ".local")
    path = local / "tools" / "bin" / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} is missing at {path}: run `bash deploy/tools.sh` (make test does), "
            "then run the tests again",
            pytrace=False,
        )
    return path


def kustomize_build(target: str) -> list[dict[str, Any]]:
    """The objects `kustomize build deploy/k8s/<target>` prints; fails the test on an error."""
    proc = subprocess.run(
        [str(tool("kustomize")), "build", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"kustomize build deploy/k8s/{target} failed:\n{proc.stderr}", pytrace=False)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    assert all(isinstance(d, dict) for d in docs)
    return docs


@pytest.fixture(scope="session")
def builds() -> dict[str, list[dict[str, Any]]]:
    """Every target's built objects, by target (`base`, `overlays/dev`, `overlays/prod`)."""
    return {target: kustomize_build(target) for target in TARGETS}
