"""The chaos network namespace: the private stack, the tidings processes, the peers and the
harness all run inside one namespace made with `unshare --net`, whose only interface is `lo`.

So a partition (nft rules dropping the broker's port) can never touch anything outside, and no
traffic can leave the machine: there is no route but 127.0.0.0/8. When the run ends, however it
ends, every process still in the namespace is stopped by its pid (all of them are ours: nothing
else can be in a namespace we just made).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["INSIDE", "bring_up_lo", "run_inside"]

INSIDE = "CHAOS_NETNS"  # set in the environment of the runner inside the namespace


def bring_up_lo() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)


def _netns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _members(ns: str) -> list[int]:
    me = os.getpid()
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and int(d.name) != me and _netns(d.name) == ns]  # fmt: skip


def _sweep(ns: str) -> int:
    """Stop every process left in namespace `ns`: SIGTERM, 10 s, SIGKILL. How many there were."""
    left = _members(ns)
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _members(ns):
        time.sleep(0.2)
    for pid in _members(ns):
        _signal(pid, signal.SIGKILL)
    return len(left)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def run_inside(argv: list[str], timeout_s: float) -> int:
    """Run `python -m tests.chaos.runner ARGV` in a new network namespace; its exit code."""
    if os.geteuid() != 0:
        print("chaos: needs root (network namespace, nft, the postgres account)", file=sys.stderr)
        return 2
    own = _netns("self")
    cmd = ["unshare", "--net", "--", sys.executable, "-m", "tests.chaos.runner", *argv]
    child = subprocess.Popen(cmd, env={**os.environ, INSIDE: "1"})
    ns = None
    for _ in range(100):  # unshare switches namespaces, then execs: wait for the switch
        ns = _netns(child.pid)
        if ns is None or ns != own or child.poll() is not None:
            break
        time.sleep(0.05)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            return child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"chaos: the run exceeded {timeout_s:.0f} s; stopping it", file=sys.stderr)
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
            return 124
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if ns is not None and ns != own:
            n = _sweep(ns)
            if n:
                print(f"chaos: stopped {n} process(es) left in the namespace", file=sys.stderr)
