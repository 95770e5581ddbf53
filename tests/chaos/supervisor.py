"""A tiny bounded supervisor: keeps one `tidings run …` process alive, as systemd or k8s would.

Every incarnation logs to its own file (`<name>-<n>.log`). A process that exits for any reason
is restarted after `backoff_s`, at most `max_restarts` times; `kill9` is the chaos hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.stack import ROOT

__all__ = ["Exit", "Supervised", "tidings_argv"]


def tidings_argv(config: Path, *stages: str) -> list[str]:
    """`tidings --config CONFIG run [--stage S]…` with this interpreter."""
    argv = [sys.executable, "-m", "streams.cli", "--config", str(config), "run"]
    for s in stages:
        argv += ["--stage", s]
    return argv


@dataclass(frozen=True)
class Exit:
    """How one incarnation ended."""

    name: str
    incarnation: int
    rc: int
    t: float
    ours: bool  # we killed it (kill9) or stopped it (stop/terminate)


class Supervised:
    """One supervised process. `start()`, then `kill9()` at will, `stop()` at the end."""

    def __init__(self, name: str, argv: list[str], logdir: Path, *, max_restarts: int = 40,
                 backoff_s: float = 1.0, restart: bool = True) -> None:  # fmt: skip
        self.name = name
        self._argv = argv
        self._logdir = logdir
        self._max_restarts = max_restarts
        self._backoff_s = backoff_s
        self._restart = restart
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._killed: set[int] = set()
        self._thread = threading.Thread(target=self._loop, name=f"sup-{name}", daemon=True)
        self.exits: list[Exit] = []
        self.logs: list[Path] = []
        self.stop_s: float | None = None  # how long the last SIGTERM took to end it

    def start(self) -> Supervised:
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = self._logdir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        with open(log, "wb") as out:
            return subprocess.Popen(self._argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)  # fmt: skip

    def _loop(self) -> None:
        for n in range(self._max_restarts + 1):
            with self._lock:
                if self._stopping.is_set():
                    return
                p = self._proc = self._spawn()
            rc = p.wait()
            with self._lock:
                ours = p.pid in self._killed or self._stopping.is_set()
                self.exits.append(Exit(self.name, n, rc, time.time(), ours))
            if not self._restart or self._stopping.wait(self._backoff_s):
                return

    def alive(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def kill9(self, wait_s: float = 15.0) -> float | None:
        """SIGKILL the current incarnation (waiting up to `wait_s` for one); its kill time."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self._lock:
                p = self._proc
                if p is not None and p.poll() is None:
                    self._killed.add(p.pid)
                    p.send_signal(signal.SIGKILL)
                    return time.time()
            time.sleep(0.1)
        return None

    def terminate(self) -> None:
        """SIGTERM the current incarnation without waiting (a member leaving its group)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._killed.add(self._proc.pid)
                self._proc.send_signal(signal.SIGTERM)

    def stop(self, drain_s: float = 30.0) -> None:
        """No more restarts; SIGTERM, then SIGKILL after `drain_s`. Raises nothing."""
        self._stopping.set()
        with self._lock:
            p = self._proc
        if p is not None and p.poll() is None:
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(drain_s)
                self.stop_s = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self._thread.join(drain_s + 15)

    def restarts(self) -> int:
        return max(0, len(self.logs) - 1)

    def unexpected_exits(self) -> list[Exit]:
        """Exits we did not cause with kill9 or stop: crashes the supervisor papered over."""
        return [e for e in self.exits if not e.ours]
