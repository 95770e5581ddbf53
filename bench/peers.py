"""The bench's peers: fast real servers in their own processes, so a run measures tidings.

- SMTP: Postfix's `smtp-sink` (C, event-driven, PIPELINING): accepts every mail and throws it
  away.
- HTTP: nginx, one process (`master_process off`), `return 204` for every request, no access
  log.

Both come from Debian's packages, unpacked (not installed) under .local/peers by
bench/peers.sh, which `make bench` runs first. Each listens on 127.0.0.1 only, on a free port;
`start_*` waits (bounded) until the port accepts and raises PeerError with the peer's log when it
does not; `Peer.stop` ends exactly the process it started (TERM, then KILL after a bounded wait).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["PEERS_DIR", "Peer", "PeerError", "free_port", "start_nginx", "start_smtp_sink"]

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / ".local" / "peers"
_FETCH_HINT = "run `bash bench/peers.sh` (make bench does) to unpack it from Debian's packages"


class PeerError(RuntimeError):
    """A peer could not be found or started; the message says why and what to do."""


@dataclass
class Peer:
    """One running peer process: where it listens, its log, and its CPU."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the peer so far (0.0 once it is gone)."""
        try:
            c = psutil.Process(self.popen.pid).cpu_times()
            return float(c.user + c.system)
        except psutil.Error:
            return 0.0

    def stop(self, timeout_s: float = 10.0) -> None:
        """TERM the peer, KILL it after `timeout_s`; idempotent."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(relpath: str) -> Path:
    path = PEERS_DIR / relpath
    if not os.access(path, os.X_OK):
        raise PeerError(f"{path} is missing: {_FETCH_HINT}")
    return path


def _wait_listening(peer: Peer, timeout_s: float) -> Peer:
    """Return `peer` once its port accepts; PeerError (with its log) if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", peer.port), 0.5):
            return peer
        if peer.popen.poll() is not None:
            break
        time.sleep(0.05)
    peer.stop()
    text = peer.log.read_text(errors="replace")[-2000:] if peer.log.exists() else ""
    raise PeerError(f"{peer.name} did not listen on 127.0.0.1:{peer.port}: {text or '(no log)'}")


def smtp_sink_argv(port: int, backlog: int = 1000) -> list[str]:
    """The smtp-sink command line: 127.0.0.1:`port`, no AUTH offered, unprivileged when root."""
    argv = [str(_binary("postfix/usr/sbin/smtp-sink")), "-a"]
    if os.geteuid() == 0:  # smtp-sink refuses to keep super-user privileges
        argv += ["-u", _unprivileged_user()]
    return [*argv, f"127.0.0.1:{port}", str(backlog)]


def _unprivileged_user() -> str:
    for name in ("nobody", "daemon"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise PeerError("smtp-sink runs as root here and needs -u USER: no 'nobody' user exists")


def start_smtp_sink(tmp: Path, timeout_s: float = 15.0) -> Peer:
    """Start smtp-sink on a free 127.0.0.1 port; returns once it accepts connections."""
    port = free_port()
    argv = smtp_sink_argv(port)
    env = {**os.environ, "LD_LIBRARY_PATH": str(PEERS_DIR / "postfix/usr/lib/postfix")}
    popen_log = tmp / "smtp-sink.log"
    with open(popen_log, "wb") as out:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    return _wait_listening(Peer("smtp-sink", port, popen, popen_log), timeout_s)


def nginx_config(root: Path, port: int) -> str:
    """An nginx.conf for one unprivileged process answering 204 on 127.0.0.1:`port`."""
    temp = {k: root / k for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for d in temp.values():
        d.mkdir(parents=True, exist_ok=True)
    return f"""# written by bench/peers.py
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{ return 204; }}
    }}
}}
"""


def start_nginx(tmp: Path, timeout_s: float = 15.0) -> Peer:
    """Start nginx on a free 127.0.0.1 port; returns once it accepts connections."""
    binary = _binary("nginx/usr/sbin/nginx")
    root = tmp / "nginx"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, port))
    log = root / "stderr.log"
    argv = [str(binary), "-p", f"{root}/", "-e", str(root / "error.log"), "-c", str(conf)]
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    return _wait_listening(Peer("nginx", port, popen, log), timeout_s)
