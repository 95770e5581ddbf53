"""The gateway's real-time rows of `make bench` (issue 15, "Performance"): Socket.IO at scale.

- `gateway-sockets-10k`: N concurrent Socket.IO connections (10,000; QUICK 1,000) to ONE
  gateway process (the real stage, `tidings run --stage gateway`, its own process), each
  with its own recipient token: how long connecting them all took (at most 200 handshakes
  in flight), the handshake p50/p99, the gateway's RSS before and with them (target < 1 GB
  at 10,000: issue 15) and its CPU while it holds them idle for `hold_s`; then how long the
  gateway stays busy once every client disconnects at once.
- `gateway-sockets-latency`: the same connections, then 1,000 messages/s for 25 s (QUICK
  10 s) after a 2 s warm-up, each message to one connection (message k to connection
  k mod N): publish → client receipt p50/p99/max (target p99 < 50 ms), messages lost (sent
  - received: printed, never assumed 0), duplicates, the gateway's CPU per message, the
  load generator's and Redis's CPU.
- `gateway-sockets-ramp`: the same at rising rates (RAMP_RATES, 10 s each; QUICK 5 s), until
  p99 passes CROSS_MS (200 ms), a message is lost, or the publisher cannot keep the rate.

How. The load generator is Node (bench/sockets_loadgen.js, socket.io-client 4.8.1, the
version the gateway's page vendors; `npm ci` into .local/peers/sockets by bench/peers.sh), one
process holding every client (`transports: ["websocket"]`), its own process. Messages are
published the way the in-app processor publishes them (processors/channels/inapp.py): a Redis
PUBLISH of the inbox entry's JSON on `tidings:inbox:<tenant>:<recipient>`, from a separate
Python process (`python -m bench.gateway_sockets publish`, RESP packed by hand on one
connection: a few µs a message), paced to the rate (each message when it is due; behind
schedule, the due ones in one write, like the processor's coalescing), addressed to the
connected recipients in turn, with its wall-clock send time (epoch ms) in the entry's
`data`: the client subtracts it from its own receive time, on the same host clock. After a
phase's last publish the bench waits until every message arrived or none arrived for 2 s
(at most 15 s): a message not received by then is lost. Speed is measured here, never
asserted. CPU: psutil user+system of each process over the phase; RSS: psutil, and VmHWM
(peak). The JSON result also has each phase's worst latency per second of sending
(`per_second_max_ms`, to place spikes; the gateway refreshes presence every 20 s from its
start). Redis pub/sub is server-wide: another gateway on the same Redis gets these messages
too (and drops them), so the rows record and print `other_pattern_subscribers`.
RLIMIT_NOFILE of the gateway and the load generator is raised to the hard limit (refused when
the hard limit is below what the connections need). Traffic only to 127.0.0.1; every wait is
bounded in time and every loop in count. `LOADGEN_PER_MESSAGE_DEFLATE=0` in the environment
makes the clients not offer permessage-deflate (browsers do): a diagnostic of what the
server's per-connection deflate state costs, not a row. `BENCH_GATEWAY_GC_THRESHOLDS='[50000,
20, 1000000]'` sets the gateway's `runtime.gc_thresholds` (what full collections cost it), and
`BENCH_GATEWAY_RUNTIME='{"gc_freeze_after_s": null}'` any of its `runtime` settings (there:
its heap never frozen, streams/runtime/heap.py), `BENCH_GATEWAY_SETTINGS='{"event_loop":
"asyncio"}'` any of its `gateway` settings.

    python -m bench.gateway_sockets run [--quick] [--only ROWS] [--connections N] [--seconds S]

runs the rows outside `make bench` (printed, no report written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil
import yaml

from bench.accounting import Service, local_services
from bench.gateway import _free_port, _wait_up
from bench.harness import PY, ROOT, Plan, World

__all__ = ["SCENARIOS", "Size", "markdown", "print_row", "publish", "run"]

SCENARIOS = ("gateway-sockets-10k", "gateway-sockets-latency", "gateway-sockets-ramp")
TENANT = "bench"
LATENCY_RATE = 1_000  # messages/s of the latency row
RAMP_RATES = (1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000)
CROSS_MS = 200.0  # the ramp stops at the first rate whose p99 is past this
WARM_S = 2.0
DRAIN_IDLE_S = 2.0  # a phase ends when nothing arrived for this long after the last publish
DRAIN_MAX_S = 15.0
CONNECTING = 200  # handshakes in flight (bench/sockets_loadgen.js)
_FD_MARGIN = 512  # descriptors beyond one per connection (Kafka, Postgres, Redis, files)
_PEERS = ROOT / ".local" / "peers"
_MODULES = _PEERS / "sockets"
_LOADGEN = ROOT / "bench" / "sockets_loadgen.js"


@dataclass(frozen=True)
class Size:
    """How many connections and how long: the full rows or the QUICK ones."""

    connections: int
    seconds: float  # the latency row's window
    step_s: float  # each ramp step's window
    hold_s: float  # the 10k row's idle hold


FULL = Size(connections=10_000, seconds=25.0, step_s=10.0, hold_s=5.0)
QUICK = Size(connections=1_000, seconds=10.0, step_s=5.0, hold_s=3.0)


# ---------------------------------------------------------------- processes


def _nofile_target() -> int:
    """The hard limit (an unlimited one: the kernel's fs.nr_open, what setrlimit accepts)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        return int(hard)
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def _raise_nofile() -> None:
    """preexec_fn: the child's soft RLIMIT_NOFILE up to the hard limit."""
    n = _nofile_target()
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def _check_nofile(connections: int) -> dict[str, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + _FD_MARGIN
    if _nofile_target() < need:
        raise RuntimeError(
            f"RLIMIT_NOFILE hard limit {hard} < {need} descriptors for {connections} "
            "connections: raise it (ulimit -Hn; /etc/security/limits.conf, or LimitNOFILE=)"
        )
    return {"nofile_soft": int(soft), "nofile_hard": int(hard), "nofile_used": _nofile_target()}


def _rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _hwm_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _rss_mb(pid)


def _stop(proc: subprocess.Popen[Any], timeout_s: float = 60.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class _Lines:
    """A child's stdout as JSON lines, read by a thread; `expect` waits a bounded time."""

    def __init__(self, proc: subprocess.Popen[str], what: str) -> None:
        self._proc, self._what = proc, what
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert proc.stdout is not None
        self._t = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._t.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if isinstance(d, dict):
                    self._q.put(d)
        self._q.put(None)  # end of output

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self._what}: no {event!r} within {timeout_s:.0f} s")
            try:
                d = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if d is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
                rc = self._proc.poll()
                raise RuntimeError(f"{self._what} exited ({rc}) before {event!r}")
            if d.get("event") == "error":
                raise RuntimeError(f"{self._what}: {d.get('error')}")
            if d.get("event") == event:
                return d


@dataclass
class _Session:
    """One gateway process with `connections` Socket.IO clients of one Node load generator."""

    w: World
    name: str
    size: Size
    redis_url: str = ""
    tag: str = ""
    prefix: str = ""
    gateway: subprocess.Popen[bytes] | None = None
    loadgen: subprocess.Popen[str] | None = None
    lines: _Lines | None = None
    connected: dict[str, Any] | None = None
    gateway_idle_rss_mb: float = 0.0
    limits: dict[str, int] | None = None
    connect_cpu_s: float = 0.0  # the gateway's, while the clients connected
    gateway_started_at: float = 0.0  # epoch s when it first answered
    others: int = 0  # pattern subscribers on Redis before our gateway: they get our messages
    skip: Path | None = None  # the recipients whose connection was refused (none: no file)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def gw(self) -> Service:
        assert self.gateway is not None
        return Service("gateway", self.gateway.pid)

    @property
    def lg(self) -> Service:
        assert self.loadgen is not None
        return Service("loadgen", self.loadgen.pid)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.loadgen is not None and self.loadgen.stdin is not None
        self.loadgen.stdin.write(json.dumps(cmd) + "\n")
        self.loadgen.stdin.flush()

    def start(self) -> None:
        node = shutil.which("node")
        if node is None or not (_MODULES / "node_modules" / "socket.io-client").is_dir():
            raise RuntimeError(
                f"node or {_MODULES}/node_modules/socket.io-client missing: install Node.js, "
                "then bash bench/peers.sh (make bench runs it)"
            )
        self.limits = _check_nofile(self.size.connections)
        self.others = _pattern_subscribers(str(self.w.base["redis"]["url"]))
        self.tag = f"{self.w.run}-{secrets.token_hex(3)}"
        self.prefix = f"sock-{self.tag}-"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cfg = json.loads(json.dumps(self.w.base))
        self.redis_url = str(cfg["redis"]["url"])
        metrics_port = _free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        cfg["observe"] = {**cfg.get("observe", {}), "port": metrics_port}
        cfg["gateway"] = {
            "port": port,
            "rate_limit_per_s": 0,
            "recipient_token_secrets": {TENANT: [secrets.token_hex(32)]},
        }
        if os.environ.get("BENCH_GATEWAY_GC_THRESHOLDS"):  # the gateway's runtime.gc_thresholds
            gc = json.loads(os.environ["BENCH_GATEWAY_GC_THRESHOLDS"])
            cfg.setdefault("runtime", {})["gc_thresholds"] = gc
        if os.environ.get("BENCH_GATEWAY_SETTINGS"):  # more of its gateway settings (JSON)
            cfg["gateway"].update(json.loads(os.environ["BENCH_GATEWAY_SETTINGS"]))
        if os.environ.get("BENCH_GATEWAY_RUNTIME"):  # more of its runtime settings (JSON)
            cfg.setdefault("runtime", {}).update(json.loads(os.environ["BENCH_GATEWAY_RUNTIME"]))
        path = self.w.tmp / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        tokens = self._tokens(path)
        tidings = str(Path(PY).parent / "tidings")
        self.logs = [(self.w.tmp / f"{self.name}-{p}.log").open("wb") for p in ("gw", "lg")]
        self.gateway = subprocess.Popen(
            [tidings, "--config", str(path), "run", "--stage", "gateway"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.logs[0],
            preexec_fn=_raise_nofile,
        )
        _wait_up(url, self.gateway)
        self.gateway_started_at = time.time()
        time.sleep(1.0)  # settled after start-up
        self.gateway_idle_rss_mb = _rss_mb(self.gateway.pid)
        # A cap on its life, should the bench hang: connecting, every phase and its drain.
        phases = [WARM_S, self.size.seconds, *(self.size.step_s for _ in RAMP_RATES)]
        lifetime = 300 + self.size.hold_s + sum(p + DRAIN_MAX_S + 70 for p in phases)
        self.loadgen = subprocess.Popen(
            [
                node,
                *os.environ.get("BENCH_LOADGEN_NODE_FLAGS", "").split(),
                str(_LOADGEN),
                str(_MODULES),
                url,
                str(tokens),
                self.tag,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.logs[1],
            text=True,
            env={
                **os.environ,
                "LOADGEN_CONNECTING": str(CONNECTING),
                "LOADGEN_CONNECT_DEADLINE_S": "180",
                "LOADGEN_LIFETIME_S": str(int(lifetime)),
            },
            preexec_fn=_raise_nofile,
        )
        self.lines = _Lines(self.loadgen, "the load generator")
        c0 = self.gw.cpu_s()
        self.connected = self.lines.expect("connected", 240)
        self.connect_cpu_s = self.gw.cpu_s() - c0
        if self.connected["ok"] == 0:
            raise RuntimeError(f"no connection accepted: {self.connected['errors']}")
        if self.connected["unconnected"]:  # the messages go to the connected ones only
            self.skip = self.w.tmp / f"{self.name}-unconnected.txt"
            self.skip.write_text("".join(f"{r}\n" for r in self.connected["unconnected"]))

    def _tokens(self, config: Path) -> Path:
        """One recipient token a line, `recipient<TAB>token`, signed as the customer would."""
        from schemas.settings import load_settings
        from streams.http.gateway import sign_recipient_token

        g = load_settings(str(config)).gateway
        path = self.w.tmp / f"{self.name}-tokens.tsv"
        with path.open("w") as f:
            for i in range(self.size.connections):
                r = f"{self.prefix}{i:05d}"
                f.write(f"{r}\t{sign_recipient_token(g, TENANT, r, 3600)}\n")
        return path

    def phase(self, label: str, rate: float, seconds: float) -> dict[str, Any]:
        """Publish `rate`/s for `seconds`, wait for the stragglers, return what arrived."""
        assert self.lines is not None and self.connected is not None
        total = max(1, int(rate * seconds))
        self.send({"cmd": "phase", "name": label, "expect": total})
        self.lines.expect("phase", 30)
        redis = next((s for s in local_services() if s.name == "redis"), None)
        pub = subprocess.Popen(
            [
                PY, "-m", "bench.gateway_sockets", "publish", "--redis", self.redis_url,
                "--tenant", TENANT, "--prefix", self.prefix,
                "--connections", str(self.size.connections),
                "--rate", str(rate), "--seconds", str(seconds), "--phase", label,
                "--tag", self.tag, *(["--skip", str(self.skip)] if self.skip else []),
            ],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        rss_peak = 0.0
        try:
            pub_lines = _Lines(pub, "the publisher")
            pub_lines.expect("ready", 60)
            t0 = time.monotonic()
            g0, l0, r0 = self.gw.cpu_s(), self.lg.cpu_s(), redis.cpu_s() if redis else 0.0
            gc0 = self.gc_pauses()
            end = time.monotonic() + seconds + 60
            while pub.poll() is None and time.monotonic() < end:
                rss_peak = max(rss_peak, _rss_mb(self.gw.pid))
                time.sleep(0.5)
            done = pub_lines.expect("done", 10)
        finally:
            _stop(pub, 5)
        drain_s = self._drain(label, int(done["sent"]))
        t1 = time.monotonic()
        g1, l1, r1 = self.gw.cpu_s(), self.lg.cpu_s(), redis.cpu_s() if redis else 0.0
        gc1 = self.gc_pauses()
        self.send({"cmd": "report", "name": label})
        rep = self.lines.expect("report", 60)
        sent = int(done["sent"])
        secs = t1 - t0
        gw_cpu = g1 - g0
        redis_ok = redis is not None and sent > 0
        return {
            "rate": rate,
            "seconds": round(float(done["seconds"]), 2),
            "sent": sent,
            "received": rep["received"],
            "lost": sent - int(rep["received"]),
            "duplicates": rep["duplicates"],
            "misrouted": rep["misrouted"],
            "dropped_connections": rep["dropped"],
            "drop_reasons": rep["drop_reasons"],
            "still_connected": rep["connected"],
            "messages_per_s": round(sent / float(done["seconds"]), 1) if done["seconds"] else None,
            "publisher_behind_max_ms": done["behind_max_ms"],
            "published_to_no_subscriber": done["no_subscriber"],
            "p50_ms": _r(rep["p50_ms"]),
            "p90_ms": _r(rep["p90_ms"]),
            "p99_ms": _r(rep["p99_ms"]),
            "p999_ms": _r(rep["p999_ms"]),
            "max_ms": _r(rep["max_ms"]),
            "per_second_max_ms": rep["per_second_max_ms"],
            # the gateway refreshes presence every 20 s from its start: compare spikes
            "per_second_since_gateway_start_s": round(
                float(rep["start_epoch_ms"]) / 1000 - self.gateway_started_at, 1
            ),
            "gateway_cpu_s": round(gw_cpu, 2),
            "gateway_cpu_ms_per_message": round(gw_cpu / sent * 1000, 3) if sent else None,
            "gateway_cores": round(gw_cpu / secs, 2),
            "gateway_rss_mb": round(max(rss_peak, _rss_mb(self.gw.pid)), 1),
            "loadgen_cores": round((l1 - l0) / secs, 2),
            "loadgen_rss_mb": round(float(rep["rss_mb"]), 1),
            "publisher_cpu_s": round(float(done["cpu_s"]), 2),
            "redis_cpu_ms_per_message": round((r1 - r0) / sent * 1000, 3) if redis_ok else None,
            "drain_s": round(drain_s, 2),
            # The gateway's own tidings_gc_pause_seconds over the phase, by generation:
            # [collections, total ms].
            "gc_pauses": {
                g: [int(c - gc0.get(g, (0, 0))[0]), round((t - gc0.get(g, (0, 0))[1]) * 1000, 1)]
                for g, (c, t) in gc1.items()
            },
        }

    def gc_pauses(self) -> dict[str, tuple[float, float]]:
        """The gateway's garbage collections so far, by generation: (count, seconds)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(self.metrics_url, timeout=5).text
        except httpx.HTTPError:
            return {}
        got: dict[str, list[float]] = {}
        for fam in text_string_to_metric_families(text):
            if fam.name != "tidings_gc_pause_seconds":
                continue
            for smp in fam.samples:
                g = smp.labels.get("generation", "?")
                if smp.name.endswith("_count"):
                    got.setdefault(g, [0.0, 0.0])[0] = smp.value
                elif smp.name.endswith("_sum"):
                    got.setdefault(g, [0.0, 0.0])[1] = smp.value
        return {g: (c, t) for g, (c, t) in got.items()}

    def _drain(self, label: str, sent: int) -> float:
        """Wait until `sent` arrived, or nothing more for DRAIN_IDLE_S (≤ DRAIN_MAX_S)."""
        assert self.lines is not None
        t0 = time.monotonic()
        last, last_change = -1, t0
        while time.monotonic() - t0 < DRAIN_MAX_S:
            self.send({"cmd": "count", "name": label})
            got = int(self.lines.expect("count", 10)["received"])
            now = time.monotonic()
            if got >= sent:
                break
            if got != last:
                last, last_change = got, now
            elif now - last_change >= DRAIN_IDLE_S:
                break
            time.sleep(0.1)
        return time.monotonic() - t0

    def hold(self, seconds: float) -> dict[str, float]:
        """Hold the connections idle: the gateway's CPU meanwhile."""
        t0, c0 = time.monotonic(), self.gw.cpu_s()
        time.sleep(seconds)
        return {"idle_cores": round((self.gw.cpu_s() - c0) / (time.monotonic() - t0), 3)}

    def close_clients(self) -> dict[str, float]:
        """Disconnect every client at once: how long the gateway stays busy after (≤ 60 s)."""
        assert self.lines is not None
        t0, c0 = time.monotonic(), self.gw.cpu_s()
        self.send({"cmd": "close"})
        self.lines.expect("closed", 30)
        prev, t_prev, busy_until = c0, t0, t0
        while time.monotonic() - t0 < 60:
            time.sleep(0.5)
            c, t = self.gw.cpu_s(), time.monotonic()
            if (c - prev) / (t - t_prev) > 0.2:  # busy: over a fifth of a core
                busy_until = t
            elif t - busy_until > 2.0:
                break
            prev, t_prev = c, t
        return {
            "disconnect_busy_s": round(busy_until - t0, 1),
            "disconnect_cpu_s": round(self.gw.cpu_s() - c0, 2),
        }

    def stop(self) -> None:
        if self.loadgen is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self.loadgen.stdin is not None
                self.loadgen.stdin.close()  # it exits on stdin's end
            _stop(self.loadgen, 10)
        if self.gateway is not None:
            _stop(self.gateway)
        for f in self.logs:
            f.close()
        self._forget_presence()

    def _forget_presence(self) -> None:
        """The presence keys the gateway wrote for the run's recipients (TTL 60 s anyway)."""
        if not self.prefix or not self.redis_url:
            return
        import redis

        from streams.state.presence import presence_key

        with contextlib.suppress(redis.RedisError, OSError):
            r = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
            keys = [
                presence_key(TENANT, f"{self.prefix}{i:05d}") for i in range(self.size.connections)
            ]
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])
            r.close()


def _pattern_subscribers(url: str) -> int:
    """PUBSUB NUMPAT: Redis pub/sub is server-wide (not per database), so every other
    gateway on this Redis receives the bench's messages too (and drops them: no room)."""
    import redis

    try:
        r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        n = int(r.pubsub_numpat())
        r.close()
    except (redis.RedisError, OSError):
        return -1
    return n


def _r(v: Any) -> float | None:
    return round(float(v), 2) if v is not None else None


# ---------------------------------------------------------------- rows


def run(
    w: World, plan: Plan, name: str, *, quick: bool, size: Size | None = None
) -> dict[str, Any]:
    """One row (SCENARIOS): start the gateway and the clients, measure, stop."""
    del plan  # these rows size themselves (Size)
    sz = size or (QUICK if quick else FULL)
    s = _Session(w, name, sz)
    try:
        t0 = time.monotonic()
        s.start()
        assert s.connected is not None and s.gateway is not None and s.limits is not None
        c = s.connected
        out: dict[str, Any] = {
            "connections": sz.connections,
            "connected": c["ok"],
            "refused": c["failed"],
            "pending": c["pending"],
            "refusals": c["errors"],
            "connect_s": round(float(c["seconds"]), 2),
            "connect_setup_s": round(time.monotonic() - t0, 1),
            "connects_per_s": round(c["ok"] / c["seconds"], 1) if c["seconds"] else None,
            "handshake_p50_ms": _r(c["handshake_p50_ms"]),
            "handshake_p99_ms": _r(c["handshake_p99_ms"]),
            "handshake_max_ms": _r(c["handshake_max_ms"]),
            "gateway_cpu_ms_per_connect": round(s.connect_cpu_s / max(1, c["ok"]) * 1000, 3),
            "gateway_idle_rss_mb": round(s.gateway_idle_rss_mb, 1),
            "gateway_rss_mb": round(_rss_mb(s.gateway.pid), 1),
            "loadgen_rss_mb": round(_rss_mb(s.lg.pid), 1),
            "per_message_deflate": c.get("per_message_deflate"),
            "other_pattern_subscribers": s.others,
            **s.limits,
        }
        if name == "gateway-sockets-10k":
            out.update(s.hold(sz.hold_s))
            out["gateway_rss_mb"] = round(_rss_mb(s.gateway.pid), 1)
            per = (out["gateway_rss_mb"] - out["gateway_idle_rss_mb"]) / max(1, c["ok"])
            out["gateway_kb_per_connection"] = round(per * 1024, 1)
        elif name == "gateway-sockets-latency":
            s.phase("warm", LATENCY_RATE, WARM_S)
            out.update(s.phase("main", LATENCY_RATE, sz.seconds))
        else:
            s.phase("warm", RAMP_RATES[0], WARM_S)
            steps = []
            for rate in RAMP_RATES:
                st = s.phase(f"rate-{rate}", rate, sz.step_s)
                steps.append(st)
                short = st["messages_per_s"] is not None and st["messages_per_s"] < 0.9 * rate
                if (st["p99_ms"] or 0) > CROSS_MS or st["lost"] or short:
                    break
            out["steps"] = steps
            crossed = [st["rate"] for st in steps if (st["p99_ms"] or 0) > CROSS_MS]
            out["p99_over_200ms_at"] = crossed[0] if crossed else None
            out["max_rate_tried"] = steps[-1]["rate"]
        out.update(s.close_clients())
        out["gateway_rss_after_disconnect_mb"] = round(_rss_mb(s.gateway.pid), 1)
        out["gateway_peak_rss_mb"] = round(_hwm_mb(s.gateway.pid), 1)
        return out
    finally:
        s.stop()


def _f(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def print_row(name: str, r: dict[str, Any]) -> None:
    pad = " " * 29
    print(
        f"  {name:<27} {r['connected']:>6}/{r['connections']} connected in "
        f"{r['connect_s']:.1f} s ({r['refused']} refused; handshake p50 "
        f"{_f(r['handshake_p50_ms'])} p99 {_f(r['handshake_p99_ms'])} ms; gateway "
        f"{r['gateway_cpu_ms_per_connect']:.2f} CPU ms/connect)",
        flush=True,
    )
    print(
        f"{pad}gateway RSS {r['gateway_idle_rss_mb']:.0f} → {r['gateway_rss_mb']:.0f} MB "
        f"(peak {r['gateway_peak_rss_mb']:.0f}, {_kb_per_connection(r):.1f} KB/connection, "
        f"{r['gateway_rss_after_disconnect_mb']:.0f} MB after they left)"
        + (f", idle {r['idle_cores']:.3f} cores" if "idle_cores" in r else ""),
        flush=True,
    )
    for st in r.get("steps") or ([r] if "p99_ms" in r else []):
        print(f"{pad}{_step_line(st)}", flush=True)
    if r.get("other_pattern_subscribers") and ("steps" in r or "p99_ms" in r):
        print(
            f"{pad}note: {r['other_pattern_subscribers']} other Redis pattern subscriber(s) "
            "(another gateway?) got these messages too",
            flush=True,
        )
    tail = (
        f"disconnecting all: gateway busy {r['disconnect_busy_s']:.1f} s, "
        f"{r['disconnect_cpu_s']:.2f} CPU s"
    )
    if "steps" in r:
        at = r["p99_over_200ms_at"]
        crossed = f"p99 > {CROSS_MS:.0f} ms at {at}/s" if at else (
            f"p99 ≤ {CROSS_MS:.0f} ms up to {r['max_rate_tried']}/s"
        )  # fmt: skip
        tail = f"{crossed}; {tail}"
    print(f"{pad}{tail} [{r.get('step_s', 0):.0f} s]", flush=True)


def _kb_per_connection(r: dict[str, Any]) -> float:
    grown = r["gateway_rss_mb"] - r["gateway_idle_rss_mb"]
    return float(grown) * 1024 / max(1, int(r["connected"]))


def _step_line(st: dict[str, Any]) -> str:
    return (
        f"{_f(st['messages_per_s'], 0)}/s of {st['rate']:.0f}: p50 {_f(st['p50_ms'])} "
        f"p99 {_f(st['p99_ms'])} max {_f(st['max_ms'])} ms, lost {st['lost']} of {st['sent']}"
        f" (dup {st['duplicates']}, dropped conns {st['dropped_connections']}), gateway "
        f"{_f(st['gateway_cpu_ms_per_message'], 3)} CPU ms/msg ({st['gateway_cores']:.2f} "
        f"cores), loadgen {st['loadgen_cores']:.2f} cores" + _gc_text(st.get("gc_pauses"))
    )


def _gc_text(pauses: dict[str, list[float]] | None) -> str:
    if not pauses:
        return ""
    full = pauses.get("2", [0, 0.0])
    young = [pauses.get(g, [0, 0.0]) for g in ("0", "1")]
    return (
        f"; GC: {int(full[0])} full ({full[1]:.0f} ms), "
        f"{int(sum(y[0] for y in young))} young ({sum(y[1] for y in young):.0f} ms)"
    )


def markdown(sc: dict[str, Any]) -> list[str]:
    """The docs/benchmarks.md section of these rows (none when none ran)."""
    rows = [(n, sc[n]) for n in SCENARIOS if n in sc and "error" not in sc[n]]
    if not rows:
        return []
    out = [
        "## The gateway: Socket.IO connections and real-time latency (issue 15)",
        "",
        "bench/gateway_sockets.py. One gateway process (`tidings run --stage gateway`), N "
        "Socket.IO clients in one Node process (socket.io-client 4.8.1, websocket transport, "
        f"each its own recipient token, at most {CONNECTING} handshakes in flight). Targets: "
        "RSS < 1 GB at 10,000 connections, p99 < 50 ms at 1,000 messages/s. *busy after "
        "all left*: how long the gateway kept over a fifth of a core busy once every client "
        "disconnected at once.",
        "",
        "| row | connected | connect s | handshake p50 / p99 ms | gateway CPU ms / connect "
        "| gateway RSS MB: idle → with them (peak) | KB / connection | idle cores "
        "| busy after all left s |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for n, r in rows:
        idle = f"{r['idle_cores']:.3f}" if "idle_cores" in r else "-"
        out.append(
            f"| {n} | {r['connected']:,} of {r['connections']:,} | {r['connect_s']:.1f} | "
            f"{_f(r['handshake_p50_ms'], 0)} / {_f(r['handshake_p99_ms'], 0)} | "
            f"{r['gateway_cpu_ms_per_connect']:.2f} | {r['gateway_idle_rss_mb']:.0f} → "
            f"{r['gateway_rss_mb']:.0f} ({r['gateway_peak_rss_mb']:.0f}) | "
            f"{_kb_per_connection(r):.0f} | {idle} | {r['disconnect_busy_s']:.1f} |"
        )
    paced = [(n, r, st) for n, r in rows for st in r.get("steps") or ([r] if "p99_ms" in r else [])]
    if paced:
        out += [
            "",
            "Messages PUBLISHed on Redis as the in-app processor does, paced, each to one "
            "connection, the send time in the entry: *latency* is publish → client receipt on "
            "the same host clock. *lost*: sent - received by the end of the drain (every "
            f"message in, or none for {DRAIN_IDLE_S:.0f} s).",
            "",
            "| row | connections | messages/s (offered) | p50 / p99 / max ms | lost | "
            "gateway CPU ms / message | gateway cores | loadgen cores | Redis CPU ms / message |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for n, r, st in paced:
            out.append(
                f"| {n} | {r['connected']:,} | {_f(st['messages_per_s'], 0)} "
                f"({st['rate']:,.0f}) | {_f(st['p50_ms'])} / {_f(st['p99_ms'])} / "
                f"{_f(st['max_ms'])} | {st['lost']} of {st['sent']:,} | "
                f"{_f(st['gateway_cpu_ms_per_message'], 3)} | {st['gateway_cores']:.2f} | "
                f"{st['loadgen_cores']:.2f} | {_f(st['redis_cpu_ms_per_message'], 3)} |"
            )
    ramp = sc.get("gateway-sockets-ramp")
    if ramp and "error" not in ramp:
        at = ramp["p99_over_200ms_at"]
        out += [
            "",
            f"Ramp: p99 passed {CROSS_MS:.0f} ms at {at:,} messages/s."
            if at
            else f"Ramp: p99 stayed under {CROSS_MS:.0f} ms up to {ramp['max_rate_tried']:,} "
            "messages/s (the last rate tried: it stops at a lost message or a rate the "
            "publisher could not hold).",
        ]
    return [*out, ""]


# ---------------------------------------------------------------- the publisher


def _resp(*parts: bytes) -> bytes:
    """One Redis command in RESP, the bytes redis-py would send."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def publish(
    url: str, tenant: str, prefix: str, connections: int, rate: float, seconds: float,
    phase: str, tag: str, skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:  # fmt: skip
    """PUBLISH `rate`/s for `seconds` as the in-app processor does; what it achieved.

    The commands are packed here and written on one redis-py connection (its AUTH and
    SELECT done), the due ones together, then their replies read: a few µs per message, so
    the publisher's CPU stays small next to the gateway's at the ramp's rates.
    """
    import redis

    from processors.channels.inapp import DEFAULT_CHANNEL_PREFIX

    r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    r.ping()
    conn = r.connection_pool.get_connection()
    # Message j to recipients[j mod len]: each message to one connection, all of them in turn.
    recipients = [x for i in range(connections) if (x := f"{prefix}{i:05d}") not in skip]
    if not recipients:
        raise SystemExit("publish: no recipient left to publish to")
    total = max(1, int(rate * seconds))
    print(json.dumps({"event": "ready"}), flush=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds + 30
    k = nobody = 0
    behind = 0.0
    try:
        while k < total and time.perf_counter() < deadline:
            now = time.perf_counter()
            due = min(total, int((now - t0) * rate) + 1)
            if due <= k:
                time.sleep(max(0.0, t0 + k / rate - now))
                continue
            behind = max(behind, now - (t0 + k / rate))
            created = datetime.now(UTC).isoformat()
            batch = []
            for j in range(k, due):
                recipient = recipients[j % len(recipients)]
                entry = {
                    "id": f"{tag}-{phase}-{j}", "tenant": tenant, "recipient": recipient,
                    "category": "orders", "title": "Your order shipped",
                    "body": f"Order {j} is on its way and arrives on Thursday.",
                    "data": {"bench": tag, "phase": phase, "sent_ms": time.time() * 1000},
                    "created_at": created,
                }  # fmt: skip
                channel = f"{DEFAULT_CHANNEL_PREFIX}{tenant or '-'}:{recipient}"
                batch.append(_resp(b"PUBLISH", channel.encode(), json.dumps(entry).encode()))
            conn.send_packed_command([b"".join(batch)])  # type: ignore[no-untyped-call]
            nobody += sum(1 for _ in range(k, due) if conn.read_response() == 0)
            k = due
    finally:
        r.connection_pool.release(conn)
        r.close()
    return {
        "event": "done",
        "sent": k,
        "seconds": time.perf_counter() - t0,
        "behind_max_ms": round(behind * 1000, 1),
        "no_subscriber": nobody,
        "cpu_s": time.process_time() - cpu0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway_sockets")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish", help="(the rows start it) publish paced inbox entries")
    p.add_argument("--redis", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--skip", type=Path, help="a file of recipients, one a line, not to address")
    r = sub.add_parser("run", help="run the rows outside make bench (no report written)")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--only", default=",".join(SCENARIOS))
    r.add_argument("--connections", type=int)
    r.add_argument("--seconds", type=float, help="the latency row's window (ramp steps: half)")
    args = ap.parse_args(argv)
    if args.cmd == "publish":
        if not args.redis.startswith(("redis://127.0.0.1", "redis://localhost")):
            raise SystemExit(f"bench: refusing to publish to {args.redis}; 127.0.0.1 only")
        skip = frozenset(args.skip.read_text().split()) if args.skip else frozenset()
        got = publish(args.redis, args.tenant, args.prefix, args.connections, args.rate,
                      args.seconds, args.phase, args.tag, skip)  # fmt: skip
        print(json.dumps(got), flush=True)
        return 0
    from bench.harness import QUICK as QUICK_PLAN
    from bench.harness import cleanup, make_world

    names = [n for n in args.only.split(",") if n]
    if unknown := sorted(set(names) - set(SCENARIOS)):
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    size = QUICK if args.quick else FULL
    if args.connections:
        size = replace(size, connections=args.connections)
    if args.seconds:
        size = replace(size, seconds=args.seconds, step_s=max(3.0, args.seconds / 2))
    w = make_world(7)
    try:
        for n in names:
            t0 = time.monotonic()
            try:
                res = run(w, QUICK_PLAN, n, quick=args.quick, size=size)
            except Exception as exc:
                print(f"  {n}: FAILED: {exc}", flush=True)
                continue
            res["step_s"] = round(time.monotonic() - t0, 1)
            print_row(n, res)
            print(json.dumps(res, default=str), file=sys.stderr)
    finally:
        cleanup(w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
