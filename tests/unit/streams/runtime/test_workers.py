"""`tidings run --workers N`: the process plan, and the supervisor with fake children.

The supervisor runs as its own process here (as under `tidings run`), its children are
`python -c` programs that record their pid, sleep, and report the signal that stopped them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import load_settings
from streams.app import Unit, for_worker, plan_processes
from streams.cli.main import build_parser
from streams.runtime.workers import clean_stop, die_with_parent

ROOT = Path(__file__).resolve().parents[3]

# A fake worker: argv[1] = directory, argv[2] = name, argv[3] = behaviour.
CHILD = """
import os, signal, sys, time
from pathlib import Path
d, name, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def stop(signum, frame):
    (d / f"{name}.stopped").write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if how == "stubborn" else stop)
signal.signal(signal.SIGINT, stop)
with open(d / f"{name}.starts", "a") as f:
    f.write(f"{os.getpid()}\\n")
(d / f"{name}.pid").write_text(str(os.getpid()))
if how.startswith("exit"):
    time.sleep(0.5)
    sys.exit(int(how[4:]))
time.sleep(120)
"""

# The supervisor under test: argv[1] = JSON [[name, behaviour], ...], argv[2] = directory.
SUPERVISOR = """
import json, logging, sys
from streams.runtime.workers import Worker, supervise
logging.basicConfig(level=logging.INFO)
spec, d, bound = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
child = sys.argv[4]
ws = [Worker(n, (sys.executable, "-c", child, d, n, how)) for n, how in spec]
sys.exit(supervise(ws, stop_bound_s=bound, poll_s=0.05))
"""


class Run:
    """One supervisor process and the directory its fake children write to."""

    def __init__(self, d: Path, spec: list[tuple[str, str]], bound_s: float = 10.0) -> None:
        self.d = d
        self.names = [n for n, _ in spec]
        argv = [sys.executable, "-c", SUPERVISOR, json.dumps(spec), str(d), str(bound_s), CHILD]
        self.p = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)

    def pids(self, timeout_s: float = 20.0) -> dict[str, int]:
        """The children's pids, once every one of them is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            files = [self.d / f"{n}.pid" for n in self.names]
            if all(f.exists() and f.read_text() for f in files):
                return {n: int(f.read_text()) for n, f in zip(self.names, files, strict=True)}
            assert self.p.poll() is None, f"supervisor exited {self.p.returncode}"
            time.sleep(0.05)
        raise AssertionError("the children did not all start")

    def wait(self, timeout_s: float = 30.0) -> int:
        self.p.wait(timeout_s)
        return self.p.returncode

    def stopped_by(self, name: str) -> int | None:
        f = self.d / f"{name}.stopped"
        return int(f.read_text()) if f.exists() else None

    def starts(self, name: str) -> int:
        return len((self.d / f"{name}.starts").read_text().split())


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for r in made:  # never leave a supervisor behind (its children follow it)
        if r.p.poll() is None:
            r.p.kill()
            r.p.wait(10)
        assert r.p.stderr is not None
        r.p.stderr.close()


def _run(runs: list[Run], d: Path, spec: list[tuple[str, str]], bound_s: float = 10.0) -> Run:
    runs.append(Run(d, spec, bound_s))
    return runs[-1]


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether `pid` is dead (gone, or a zombie nobody reaps) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- the supervisor


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_forwarded_to_every_worker_and_waited_for(
    tmp_path: Path, runs: list[Run], signum: int
) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "sleep")])
    pids = r.pids()
    r.p.send_signal(signum)
    assert r.wait() == 0
    assert r.stopped_by("a") == signum and r.stopped_by("b") == signum
    assert all(_gone(p, 1) for p in pids.values())


def test_a_worker_that_dies_stops_the_others_and_fails_the_supervisor(
    tmp_path: Path, runs: list[Run]
) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "exit3")])
    r.pids()
    assert r.wait() == 3, "the dead worker's exit code"
    assert r.stopped_by("a") == signal.SIGTERM, "the survivor was stopped gracefully"
    assert r.starts("b") == 1, "no silent restart"
    assert r.p.stderr is not None
    assert "exited 3 unexpectedly" in r.p.stderr.read()


def test_a_worker_killed_by_a_signal_fails_the_supervisor_with_1(
    tmp_path: Path, runs: list[Run]
) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "sleep")])
    os.kill(r.pids()["b"], signal.SIGKILL)
    assert r.wait() == 1
    assert r.stopped_by("a") == signal.SIGTERM


def test_a_clean_exit_nobody_asked_for_is_a_failure_too(tmp_path: Path, runs: list[Run]) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "exit0")])
    r.pids()
    assert r.wait() == 1


def test_a_worker_that_ignores_sigterm_is_killed_after_the_bound(
    tmp_path: Path, runs: list[Run]
) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "stubborn")], bound_s=1.0)
    pids = r.pids()
    t0 = time.monotonic()
    r.p.send_signal(signal.SIGTERM)
    assert r.wait() == 1, "a worker had to be SIGKILLed"
    assert 1.0 <= time.monotonic() - t0 < 10
    assert r.stopped_by("a") == signal.SIGTERM and r.stopped_by("b") is None
    assert _gone(pids["b"], 1)


def test_kill_9_of_the_supervisor_kills_every_worker(tmp_path: Path, runs: list[Run]) -> None:
    r = _run(runs, tmp_path, [("a", "sleep"), ("b", "stubborn")])
    pids = r.pids()
    r.p.kill()
    assert r.wait() == -signal.SIGKILL
    assert all(_gone(p) for p in pids.values()), "PR_SET_PDEATHSIG took the workers along"
    assert r.stopped_by("a") is None, "killed, not stopped: no graceful shutdown"


def test_a_child_whose_parent_is_already_gone_kills_itself_before_exec() -> None:
    # The race the parent check closes: the parent died between fork and prctl.
    wrong_parent = die_with_parent(os.getpid() + 1_000_000)
    p = subprocess.Popen([sys.executable, "-c", "print('ran')"], preexec_fn=wrong_parent,
                         stdout=subprocess.PIPE)  # fmt: skip
    out, _ = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL and out == b""


def test_clean_stop_codes() -> None:
    assert all(clean_stop(rc) for rc in (0, -signal.SIGTERM, -signal.SIGINT, 130, 143))
    assert not any(clean_stop(rc) for rc in (1, 2, -signal.SIGKILL, -signal.SIGSEGV))


# ---------------------------------------------------------------- the plan and the flag


def test_each_stage_is_its_own_process_unless_threads() -> None:
    stages = ("route", "deliver", "audit")
    assert plan_processes(stages, named=False) == [Unit((s,)) for s in stages]
    assert plan_processes(stages, threads=True) == [Unit(stages)]
    assert plan_processes(("deliver",)) == [Unit(("deliver",))], "one unit: no supervisor"


def test_workers_multiplies_the_processes_of_every_stage() -> None:
    units = plan_processes(("route", "deliver"), workers=2)
    assert [u.name for u in units] == ["route#0", "route#1", "deliver#0", "deliver#1"]
    assert [u.name for u in plan_processes(("route", "deliver"), workers=2, threads=True)] == [
        "route+deliver#0",
        "route+deliver#1",
    ]


def test_callbacks_gets_one_process() -> None:
    units = plan_processes(("route", "callbacks"), workers=3, named=False)
    assert [u.name for u in units] == ["route#0", "route#1", "route#2", "callbacks"]
    with pytest.raises(ValueError, match="--workers"):
        plan_processes(("callbacks",), workers=2)
    with pytest.raises(ValueError, match="--workers"):
        plan_processes(("route", "callbacks"), workers=2, threads=True, named=False)


@pytest.mark.parametrize("bad", ["0", "65", "-1", "two", "1.5"])
def test_workers_out_of_range_is_rejected_naming_the_flag(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--stage", "deliver", "--workers", bad])
    assert exc.value.code == 2
    assert "argument --workers: must be a whole number 1..64" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--workers must be 1\.\.64"):
        plan_processes(("deliver",), workers=int(bad) if bad.lstrip("-").isdigit() else 0)


def test_a_fixed_instance_id_is_made_unique_per_worker() -> None:
    s = load_settings(runtime={"instance_id": "pod-3"})
    assert for_worker(s, 0, 1).runtime.instance_id == "pod-3", "one worker: as configured"
    assert for_worker(s, 1, 2).runtime.instance_id == "pod-3-w1"
    assert for_worker(s, 1, 2).kafka == s.kafka
    plain = load_settings()
    assert for_worker(plain, 1, 2).runtime.instance_id is None, "slots keep them apart"
