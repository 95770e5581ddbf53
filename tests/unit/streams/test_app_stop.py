"""A stage process that won't stop: its stacks on SIGUSR1, and a watchdog past the bound.

The process under test is `run_stages` in a child interpreter, with a fake stage that, once
stopped, blocks in a C call that keeps the GIL: the state in which the main loop can't even
log that the bound is over (a client call wedged without releasing the GIL, or teardown).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from schemas.settings import TidingsSettings
from streams.app import stop_bound_s

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import ctypes, sys
import streams.app as app
from schemas.settings import TidingsSettings

class Wedged:
    name = "wedged"
    def __init__(self, ctx):
        self.stop = ctx.stop
    def run(self):
        print("wedged: running", file=sys.stderr, flush=True)
        self.stop.wait()
        ctypes.PyDLL(None).sleep(120)  # PyDLL: the call keeps the GIL

app._build = lambda name, ctx: Wedged(ctx)
s = TidingsSettings(runtime={"drain_timeout_s": 0.1}, observe={"port": 0})
sys.exit(app.run_stages(s, ("wedged",)))
"""


def _wait_for(p: subprocess.Popen[str], log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        assert p.poll() is None, f"exited {p.returncode}:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{log.read_text()}")


def test_usr1_dumps_stacks_and_the_watchdog_ends_a_wedged_stop(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    bound = stop_bound_s(TidingsSettings(runtime={"drain_timeout_s": 0.1}))  # type: ignore[arg-type]
    with log.open("w") as out:
        p = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=out, stderr=out,
                             text=True)  # fmt: skip
    try:
        _wait_for(p, log, "wedged: running", 30)
        p.send_signal(signal.SIGUSR1)
        # A running process: the dump names the stage thread, and the process goes on.
        _wait_for(p, log, "Thread 0x", 10)
        assert "in run" in log.read_text()
        assert p.poll() is None, "SIGUSR1 only dumps"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(bound + 30)
        took = time.monotonic() - t0
    finally:
        p.kill()
        p.wait()
    text = log.read_text()
    assert rc == 1, f"the watchdog exits 1, got {rc}:\n{text}"
    assert bound < took < bound + 20, f"exits after the bound ({bound:.1f} s): {took:.1f} s"
    assert "Timeout (" in text, "faulthandler's watchdog fired"
    # The wedged call is in the dump: where the process was waiting, for the operator.
    assert text.count("in run") >= 2
    assert "did not stop within" not in text, "the main loop could not run (the GIL was held)"
