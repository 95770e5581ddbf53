"""`tidings run` as several processes against the real stack.

`--stage deliver --workers 2`: one command, two deliver processes on one host; each claims
its own member slot (its own transactional.id and group.instance.id), both join the test's
deliver group, and SIGTERM to the command stops both cleanly. Plain `tidings run`: one
process per stage, and a kill -9 of the command is a kill -9 of all of them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.app import default_stages
from tests.integration.pipeline import ROOT, World, wait_until

pytestmark = pytest.mark.integration


def _members(admin: AdminClient, group: str) -> list[str]:
    """The group.instance.ids of `group`'s members (empty while it is forming)."""
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return sorted(m.group_instance_id or m.member_id for m in desc.members)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, …]; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def _children(pid: int) -> list[int]:
    procs = (int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit())
    return sorted(k for k in procs if _stat(k)[1:2] == [str(pid)])


def _start(world: World, name: str, *run_args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = world.tmp / f"{name}.log"
    argv = [sys.executable, "-m", "streams.cli", "--config", str(world.config), "run", *run_args]
    with open(log_path, "wb") as log:
        p = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    world.procs.append(p)  # stopped by the fixture if the test fails half-way
    return p, log_path


def _all_dead(pids: list[int], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_stat(k)[:1] in ([], ["Z"]) for k in pids):
            return True
        time.sleep(0.1)
    return False


def test_two_workers_are_two_members_and_stop_cleanly_on_sigterm(
    world: World, kafka_admin: AdminClient
) -> None:
    p, log_path = _start(world, "workers", "--stage", "deliver", "--workers", "2")
    group = world.settings.groups.deliver

    def logs() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        members: list[str] = []

        def two_members() -> bool:
            nonlocal members
            assert p.poll() is None, f"tidings run exited {p.returncode}:\n{logs()}"
            members = _members(kafka_admin, group)
            return len(members) == 2

        wait_until(two_members, timeout_s=90, what=f"two members in {group}")
        assert len(set(members)) == 2, f"each worker has its own identity: {members}"
        assert all(m.endswith(("-0", "-1")) for m in members), members
        kids = _children(p.pid)
        assert len(kids) == 2, f"one supervisor, two worker processes: {kids}"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(3 * world.settings.runtime.drain_timeout_s + 40)
        assert rc == 0, f"exit {rc}:\n{logs()}"
        assert time.monotonic() - t0 < 60
        assert _all_dead(kids, 0.5), "no worker outlives the command"
        text = logs()
        assert text.count("stopped (0)") == 2, text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_plain_run_is_a_process_per_stage_and_kill_9_takes_them_all(world: World) -> None:
    p, log_path = _start(world, "all-0")
    first = world.send([(world.order_event(i), "structured") for i in range(4)])
    got = world.wait_mail(4)
    assert set(first) <= set(got), log_path.read_text(errors="replace")[-4000:]
    kids = _children(p.pid)
    stages = default_stages(world.settings)  # route, deliver, audit, recipients
    assert len(kids) == len(stages), f"{stages}: one process each: {kids}"
    p.kill()
    assert p.wait(10) == -signal.SIGKILL
    assert _all_dead(kids), "the stages died with the command (PR_SET_PDEATHSIG)"
    # The restarted command takes the dead members' slots over, as after any crash.
    p2, log2 = _start(world, "all-1")
    second = world.send([(world.order_event(i), "structured") for i in range(4, 8)])
    wait_until(lambda: set(first + second) <= set(world.mail()), timeout_s=90,
               what="the events after the restart delivered")  # fmt: skip
    p2.send_signal(signal.SIGTERM)
    assert p2.wait(3 * world.settings.runtime.drain_timeout_s + 40) == 0, log2.read_text()[-4000:]
