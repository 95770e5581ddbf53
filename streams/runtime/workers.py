"""One command, several OS processes: start workers, stop them together, die together.

`supervise(workers, stop_bound_s=…)` is what `tidings run --workers N` (and `tidings run`
without `--threads`) runs in the process the operator started. Its contract:

- It starts every worker (an argv) as a child with the supervisor's stdin/stdout/stderr,
  environment and working directory, then blocks until every child has exited.
- SIGTERM / SIGINT to the supervisor is forwarded to every live child; the supervisor then
  waits up to `stop_bound_s` and SIGKILLs what is left.
- A child that exits without being asked (any exit code, any signal) is not restarted: the
  supervisor logs it, SIGTERMs the others, waits for them as above, and exits non-zero, so
  whatever supervises *it* (systemd, k8s) sees the failure and restarts the whole unit.
- Exit code: 0 when stopped by a signal and every child stopped cleanly (exit 0, or ended by
  the forwarded signal); the first unexpected child's exit code if it is > 0, else 1; 1 when
  a child had to be SIGKILLed, or did not start.
- Every child gets `PR_SET_PDEATHSIG = SIGKILL` between fork and exec and kills itself there
  if its parent is already gone (the race between fork and prctl): a kill -9 of the supervisor
  is a kill -9 of every worker, so a restart finds every member identity free and takes over
  as after a crash of one process. Linux only; elsewhere children outlive a killed supervisor.

Call it from the main thread: it installs the signal handlers, and the kernel sends the
parent-death signal when the *thread* that forked the child ends, not the process.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = ["Worker", "clean_stop", "die_with_parent", "supervise"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_FORWARDED = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Worker:
    """One child process: a name for the logs and the argv to exec."""

    name: str
    argv: tuple[str, ...]


def clean_stop(rc: int) -> bool:
    """Whether exit code `rc` (Popen style: -N = killed by signal N) is a clean stop on request.

    0, or ended by SIGTERM/SIGINT before it had its own handlers (a Python child interrupted
    during start-up exits -2, or 130 where it catches KeyboardInterrupt).
    """
    return rc in (0, -signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGINT, 128 + signal.SIGTERM)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn`: the child gets SIGKILL when its parent dies; kills itself if it is gone.

    Everything is looked up here, in the parent, so the forked child only makes two
    system calls before exec. The death signal survives exec (of a non-setuid binary).
    """
    prctl = _prctl()

    def in_child() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # Set after the parent may have died: then no signal will ever come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


def supervise(workers: Sequence[Worker], *, stop_bound_s: float, poll_s: float = 0.1) -> int:
    """Run `workers` as child processes until they have all exited; returns the exit code.

    See the module docstring for the contract. Blocks; main thread only.
    """
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in _FORWARDED}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    rc = 0
    try:
        setup = die_with_parent(os.getpid())
        for w in workers:
            if received:
                break
            try:
                procs[w.name] = subprocess.Popen(w.argv, preexec_fn=setup)
            except (OSError, subprocess.SubprocessError) as exc:
                log.error("worker %s did not start: %s; stopping the others", w.name, exc)
                rc = 1
                received.append(signal.SIGTERM)
                break
            log.info("worker %s started, pid %d", w.name, procs[w.name].pid)
        rc = _wait(procs, received, rc, stop_bound_s, poll_s)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return rc


def _wait(
    procs: dict[str, subprocess.Popen[bytes]],
    received: list[int],
    rc: int,
    stop_bound_s: float,
    poll_s: float,
) -> int:
    forwarded = 0  # how many of `received` went out to the children
    deadline: float | None = None
    done: set[str] = set()

    def forward() -> None:
        nonlocal forwarded, deadline
        while forwarded < len(received):
            signum = received[forwarded]
            forwarded += 1
            if deadline is None:
                deadline = time.monotonic() + stop_bound_s
                log.info("signal %d: stopping %d worker(s), at most %.0f s",
                         signum, len(procs) - len(done), stop_bound_s)  # fmt: skip
            for name, p in procs.items():
                if name not in done:
                    p.send_signal(signum)  # a no-op once it has exited

    while True:
        # Signals first: a child that exits after the supervisor got SIGINT (a Ctrl-C
        # reaches the whole process group) is stopping on request, not dying.
        forward()
        for name, p in procs.items():
            code = p.poll()
            if code is None or name in done:
                continue
            done.add(name)
            if deadline is None:  # nobody asked it to stop
                log.error("worker %s (pid %d) exited %d unexpectedly; stopping the others",
                          name, p.pid, code)  # fmt: skip
                rc = rc or (code if code > 0 else 1)
                received.append(signal.SIGTERM)
                forward()
            elif not clean_stop(code):
                log.error("worker %s (pid %d) exited %d while stopping", name, p.pid, code)
                rc = rc or (code if code > 0 else 1)
            else:
                log.info("worker %s (pid %d) stopped (%d)", name, p.pid, code)
        if len(done) == len(procs):
            return rc
        if deadline is not None and time.monotonic() > deadline:
            left = [n for n in procs if n not in done]
            log.error("worker(s) %s did not stop within %.0f s: SIGKILL",
                      ", ".join(left), stop_bound_s)  # fmt: skip
            for n in left:
                procs[n].send_signal(signal.SIGKILL)
                procs[n].wait()
            return 1
        time.sleep(poll_s)
