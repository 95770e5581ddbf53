"""The private chaos stack: a second Kafka, Postgres and Redis that only the chaos suite uses.

Started with deploy/local/stack.sh (the same script as `make up`) in `.local/chaos` on other
ports, inside the chaos network namespace (tests/chaos/netns.py), so killing its broker, its
Postgres or its Redis never disturbs the main stack the other tests use. Faults act on the pids
stack.sh recorded, after checking each pid still runs the program it should.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Stack"]

ROOT = Path(__file__).resolve().parents[2]
STACK_SH = ROOT / "deploy/local/stack.sh"


@dataclass(frozen=True)
class Stack:
    """Ports and directories of the private stack, and the faults one can inflict on it."""

    local: Path = ROOT / ".local/chaos"
    kafka_port: int = 29092
    controller_port: int = 29093
    pg_port: int = 25432
    redis_port: int = 26379

    # ---------------------------------------------------------------- addresses

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        return {
            **keep,
            "TIDINGS_LOCAL_DIR": str(self.local),
            "TIDINGS_KAFKA_PORT": str(self.kafka_port),
            "TIDINGS_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "TIDINGS_PG_PORT": str(self.pg_port),
            "TIDINGS_REDIS_PORT": str(self.redis_port),
            "TIDINGS_KAFKA_HEAP": "768m",
            # Packages are installed by `make chaos` / `make up` before the namespace exists.
            "TIDINGS_SKIP_DEPS": "1",
        }

    # ---------------------------------------------------------------- lifecycle

    def prepare(self) -> None:
        """Outside the namespace (which has no route out): reuse the main stack's Kafka jars."""
        kdir = self.local / "kafka"
        kdir.mkdir(parents=True, exist_ok=True)
        for libs in sorted((ROOT / ".local/kafka").glob("libs-*")):
            mine = kdir / libs.name
            if (libs / ".complete").exists() and not mine.exists():
                mine.symlink_to(libs.resolve())
        if not list(kdir.glob("libs-*")):
            raise RuntimeError("no Kafka jars in .local/kafka: run `make up` once first")

    def up(self, *services: str) -> None:
        """`stack.sh up SERVICE…` (all when none); raises RuntimeError with its output."""
        cmd = ["bash", str(STACK_SH), "up", *services]
        p = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=240)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{p.stdout}{p.stderr}")

    def down(self) -> None:
        """`stack.sh down`: stops exactly the pids it started; raises nothing."""
        subprocess.run(["bash", str(STACK_SH), "down"], env=self.env(), capture_output=True,
                       timeout=120, check=False)  # fmt: skip

    # ---------------------------------------------------------------- faults

    def kill_kafka(self) -> None:
        _kill9(self.local / "kafka/kafka.pid", "kafka.Kafka")

    def kill_redis(self, *, empty: bool = True) -> None:
        _kill9(self.local / "redis/redis.pid", "redis-server")
        if empty:
            (self.local / "redis/dump.rdb").unlink(missing_ok=True)

    def stop_postgres_immediate(self) -> None:
        """`pg_ctl stop -m immediate` as the postgres account (like a crash: no checkpoint)."""
        data = (self.local / "postgres").resolve() / "data"
        pg_ctl = _pg_bin() / "pg_ctl"
        cmd = [str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, capture_output=True, timeout=60, check=True)

    def flushall(self) -> None:
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port), "FLUSHALL"],
                       capture_output=True, timeout=10, check=True)  # fmt: skip

    def partition(self, on: bool) -> None:
        """Drop every packet to or from the broker's port on lo (this namespace only)."""
        if on:
            rules = (
                "add table inet tidings_chaos\n"
                "add chain inet tidings_chaos input "
                "{ type filter hook input priority 0; policy accept; }\n"
                f"add rule inet tidings_chaos input tcp dport {self.kafka_port} drop\n"
                f"add rule inet tidings_chaos input tcp sport {self.kafka_port} drop\n"
            )
            subprocess.run(["nft", "-f", "-"], input=rules, text=True, capture_output=True,
                           timeout=10, check=True)  # fmt: skip
        elif shutil.which("nft"):
            subprocess.run(["nft", "delete", "table", "inet", "tidings_chaos"],
                           capture_output=True, timeout=10, check=False)  # fmt: skip


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[4]))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are missing (apt-get install postgresql)")
    return found[-1].parent


def _kill9(pidfile: Path, marker: str, wait_s: float = 10.0) -> None:
    """SIGKILL the pid in `pidfile` if it still runs `marker`; wait until it is gone."""
    pid = int(pidfile.read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists() or marker not in cmdline.read_bytes().decode(errors="replace"):
        raise RuntimeError(f"{pidfile}: pid {pid} does not run {marker}")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
