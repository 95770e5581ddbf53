"""deploy/local/stack.sh fails with a message that names the fix, never a stack trace.

These runs use a throw-away data directory and ports of their own, so they
never touch the stack that `make up` started.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.npm import free_port

ROOT = Path(__file__).resolve().parents[3]
STACK = ROOT / "deploy/local/stack.sh"


def _run(local: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # tidings' own settings name the stack's ports too: only what the test passes counts.
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")},
        "TIDINGS_LOCAL_DIR": str(local),
        "TIDINGS_SKIP_DEPS": "1",
        "TIDINGS_KAFKA_PORT": str(free_port()),
        "TIDINGS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "TIDINGS_PG_PORT": str(free_port()),
        "TIDINGS_REDIS_PORT": str(free_port()),
        **env,
    }
    return subprocess.run(
        ["bash", str(STACK), *args], env=full, capture_output=True, text=True, timeout=120
    )


def _assert_clear_failure(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: "), res.stderr
    assert "  fix: " in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_port_taken_names_the_port_and_the_variable(tmp_path: Path, taken_port: int) -> None:
    res = _run(tmp_path, "up", "redis", TIDINGS_REDIS_PORT=str(taken_port))
    _assert_clear_failure(
        res, f"port {taken_port} (for redis) is already taken", "TIDINGS_REDIS__URL="
    )


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("redis", "TIDINGS_REDIS__URL", "redis://127.0.0.1:{port}/0"),
        ("postgres", "TIDINGS_POSTGRES__PORT", "{port}"),
        ("kafka", "TIDINGS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:{port}"),
    ],
)
def test_tidings_own_setting_moves_the_stacks_port_too(
    tmp_path: Path, taken_port: int, service: str, variable: str, value: str
) -> None:
    # One variable per port: the stack listens where tidings' settings point, and it beats
    # the older stack-only name (set to a free port by _run).
    res = _run(tmp_path, "up", service, **{variable: value.format(port=taken_port)})
    _assert_clear_failure(res, f"port {taken_port} (for {service}) is already taken", variable)


def test_java_missing(tmp_path: Path) -> None:
    res = _run(tmp_path, "up", "kafka", TIDINGS_JAVA="/nonexistent/java")
    _assert_clear_failure(res, "Java is missing", "apt-get install")


def test_kafka_data_from_another_version(tmp_path: Path) -> None:
    data = tmp_path / "kafka/data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\n")
    (data / ".tidings-kafka-version").write_text("3.9.0\n")
    res = _run(tmp_path, "up", "kafka")
    _assert_clear_failure(res, "made by Kafka 3.9.0", "rm -rf")


def test_postgres_data_from_another_version(tmp_path: Path) -> None:
    data = tmp_path / "postgres/data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("9\n")
    res = _run(tmp_path, "up", "postgres")
    _assert_clear_failure(res, "made by PostgreSQL 9", "rm -rf")


def test_maven_cannot_fetch(tmp_path: Path) -> None:
    # A version Maven Central does not have: the fetch fails the way an outage would.
    res = _run(tmp_path, "up", "kafka", TIDINGS_KAFKA_VERSION="0.0.404")
    _assert_clear_failure(
        res, "Maven could not fetch org.apache.kafka:kafka_2.13:0.0.404", "Maven Central"
    )


def test_unknown_service(tmp_path: Path) -> None:
    _assert_clear_failure(_run(tmp_path, "up", "mongodb"), "unknown service 'mongodb'")
