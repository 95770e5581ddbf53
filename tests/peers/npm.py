"""Run the npm test peers (installed by tests/peers/install.sh under .local/npm) as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NPM = ROOT / ".local" / "npm"
BIN = NPM / "node_modules" / ".bin"
TWILIO_SPEC = NPM / "node_modules/@twilio/cli-core/src/services/twilio-api/twilio_api_v2010.json"


def ensure_installed() -> None:
    """Install the npm peers if missing (idempotent); raises with the fix when it cannot."""
    proc = subprocess.run(
        ["bash", str(ROOT / "tests/peers/install.sh")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"tests/peers/install.sh failed ({proc.returncode}): {proc.stderr[-2000:]}\n"
            "fix: make sure node >= 20 and npm are installed and the npm registry is reachable"
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: Sequence[str], ready: str, log: Path, timeout_s: float = 90.0) -> Iterator[None]:
    """Start `argv`, wait (bounded) until its output contains `ready`, kill its group on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{argv[0]} did not become ready ({ready!r}) within {timeout_s}s "
                    f"(exit {proc.poll()}); its log:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextmanager
def prism_twilio(log: Path) -> Iterator[str]:
    """Stoplight Prism mocking Twilio's own OpenAPI on 127.0.0.1; yields its base URL."""
    ensure_installed()
    port = free_port()
    argv = [str(BIN / "prism"), "mock", "-h", "127.0.0.1", "-p", str(port), str(TWILIO_SPEC)]
    with process(argv, "Prism is listening", log):
        yield f"http://127.0.0.1:{port}"
