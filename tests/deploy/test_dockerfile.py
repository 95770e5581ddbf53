"""deploy/docker/Dockerfile: hadolint-clean, non-root, `tidings` as its entrypoint.

There is no Docker engine here: the image is never built in the tests. What can be checked
without one is: hadolint (pinned by deploy/tools.sh) finds nothing, the runtime stage runs as
a numeric non-root user (the uid the Kubernetes manifests name), the entrypoint is `tidings`
with `run --stage route` as default arguments, and the build copies every package
pyproject.toml installs past its .dockerignore.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.conftest import ROOT, tool

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "a continuation line at the end of the Dockerfile"
    return out


def final_stage(ins: list[Instruction]) -> list[Instruction]:
    starts = [i for i, x in enumerate(ins) if x.keyword == "FROM"]
    assert starts, "no FROM"
    return ins[starts[-1] :]


def exec_form(ins: list[Instruction], keyword: str) -> list[str]:
    (found,) = [x for x in ins if x.keyword == keyword]
    value: Any = json.loads(found.args)
    assert isinstance(value, list), f"{keyword} must be in exec form (JSON array)"
    return [str(v) for v in value]


def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An explicit config: no .hadolint.yaml of the caller's may relax the rules.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n")
    return subprocess.run(
        [str(tool("hadolint")), "--no-color", "--config", str(config), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    proc = hadolint(DOCKERFILE, tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = hadolint(bad, tmp_path)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest
    assert "DL3013" in proc.stdout  # unpinned pip install


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    users = [x.args for x in stage if x.keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric: Kubernetes' runAsNonRoot can verify only a numeric user.
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_the_manifests_run_as_the_image_user(builds: dict[str, list[dict[str, Any]]]) -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    uid = int([x.args for x in stage if x.keyword == "USER"][-1].partition(":")[0])
    for docs in builds.values():
        for doc in docs:
            if doc["kind"] in ("Deployment", "Job"):
                assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_entrypoint_is_tidings_with_the_route_stage_by_default() -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    assert exec_form(stage, "ENTRYPOINT") == ["tidings"]
    assert exec_form(stage, "CMD") == ["run", "--stage", "route"]
    exposed = {p for x in stage if x.keyword == "EXPOSE" for p in x.args.split()}
    assert {"9464", "8088"} <= exposed


def test_base_image_is_python_311_slim() -> None:
    ins = instructions(DOCKERFILE.read_text())
    args = dict(x.args.partition("=")[::2] for x in ins if x.keyword == "ARG" and "=" in x.args)
    for x in ins:
        if x.keyword == "FROM":
            image = x.args.split()[0]
            if image.startswith("${") and image.endswith("}"):
                image = args[image[2:-1]]
            assert image.startswith("python:3.11-slim"), image


def test_the_build_installs_the_repository_with_pip() -> None:
    ins = instructions(DOCKERFILE.read_text())
    runs = " ".join(x.args for x in ins if x.keyword == "RUN")
    assert "pip install --no-cache-dir ." in runs
    copied = {
        src.rstrip("/")
        for x in ins
        if x.keyword == "COPY" and not x.args.startswith("--from")
        for src in x.args.split()[:-1]
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {p.rstrip("*").rstrip(".") for p in packages} | {"pyproject.toml", "README.md"}
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"
    assert "examples" not in copied, "the catalog comes from a ConfigMap, not the image"
    # The .dockerignore beside the Dockerfile ignores everything, then lets in what is copied.
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert copied <= allowed, f"copied but ignored: {sorted(copied - allowed)}"
