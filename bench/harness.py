"""`make bench`: measure tidings against a raw confluent-kafka loop, faust-streaming and the
client-library limits, in one run.

    python -m bench.harness [--quick] [--seed N] [--only raw,limit-smtp,pipeline-mixed,...]
                            [--profile] [--keep]

Steps (every wait is bounded in time, every loop in count; traffic only to 127.0.0.1):
1. a per-run world: uuid-named topics and groups; fast real peers, each its own process
   (bench/peers.py: Postfix's smtp-sink for email, nginx `return 204` for webhooks); one
   generated 50-rule catalog per channel mix (email, webhook, in-app, mixed: bench/workload.py);
2. pre-produce the workload to the run's input topics;
3. run each scenario in its own process(es) and measure, after warm-up, sustained events/s,
   CPU seconds per 1,000 events (psutil, user+system of the measured processes) and peak RSS
   (VmHWM): raw, faust, route; the limit rows (bench/limits.py: a bare aiosmtplib, aiohttp or
   httpx client → the peer, at tidings' concurrency for that channel: sends/s, client and peer
   CPU per send); the pipelines, `pipeline[-per-stage][-webhook|-inapp|-mixed][-2w]` (one
   process like `tidings run --threads`, or one per stage like `tidings run`, `-2w` with two
   deliver processes; no suffix: email), each with CPU per 1,000
   notifications per process (bench/accounting.py: route, deliver, audit, the peers, the Kafka
   broker, Postgres, Redis) and deliver's crash window (p50/p99: provider accepted → first
   durable record, and → Postgres commit), from the deliver process's last line;
4. latency of the one-process email pipeline under open-loop load at 25/50/75% of its measured
   maximum: event produce timestamp → timestamp of its `sent` status record;
5. write bench/results/<timestamp>.json, bench/results/<timestamp>.png and docs/benchmarks.md,
   with deliver's sends/s ÷ the limit row of its channel;
6. clean up: delete the run's topics and its rows in Postgres, stop the peers.

`--quick` without `--only` runs QUICK_SCENARIOS (each kind of row once) with short windows.
With `--profile`, py-spy records every measured process during its window (this slows
them, so no report is written) and the top frames are printed and saved as text.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.accounting import Service, local_services, stage_accounting
from bench.peers import Peer, PeerError, start_nginx, start_smtp_sink
from bench.workload import EVENT_TYPES, MIXES, EventPool, channel_shares, write_catalog

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable


@dataclass(frozen=True)
class Plan:
    """How long and how much: the full run or the QUICK one."""

    warm_s: float
    window_s: float
    base_events: int  # raw, faust and route read these (raw goes round them again)
    pipeline_events: int  # per pipeline form (ids must be fresh: deliver deduplicates)
    latency_window_s: float
    in_partitions: int = 2
    out_partitions: int = 6


FULL = Plan(
    warm_s=8.0, window_s=30.0, base_events=1_000_000, pipeline_events=250_000, latency_window_s=30.0
)
QUICK = Plan(
    warm_s=2.0, window_s=6.0, base_events=120_000, pipeline_events=30_000, latency_window_s=6.0
)


# ---------------------------------------------------------------- the world


@dataclass
class World:
    """Everything one bench run owns: its tmp dir, catalogs (one per channel mix), peers."""

    run: str
    tmp: Path
    catalogs: dict[str, Path]
    bootstrap: str
    base: dict[str, Any]
    smtp: Peer
    http: Peer
    topics: set[str] = field(default_factory=set)

    @property
    def catalog(self) -> Path:
        """The email-only catalog (raw, faust, route, latency and the `pipeline` rows use it)."""
        return self.catalogs["email"]

    def in_prefix(self, dataset: str) -> str:
        return f"bench.{self.run}.{dataset}."

    def config(
        self, name: str, dataset: str, plan: Plan, mix: str = "email", observe: str = "",
        **runtime: Any,
    ) -> Path:  # fmt: skip
        """Write the tidings config of scenario `name` reading input set `dataset`, whose rules
        use channel mix `mix` (bench/workload.py MIXES), instrumented as `observe` says
        (OBSERVE_VARIANTS; "" = the defaults: metrics on, no tracing)."""
        cfg = json.loads(json.dumps(self.base))
        if observe:
            cfg["observe"] = {**cfg["observe"], **OBSERVE_VARIANTS[observe](self)}
        p = f"bench.{self.run}.{name}."
        cfg["topics"] = {
            "events": [f"{self.in_prefix(dataset)}{t}" for t in EVENT_TYPES],
            "dispatch_prefix": f"{p}dispatch.",
            "status": f"{p}status",
            "dlq": f"{p}dlq",
            "retry_prefix": f"{p}retry.",
            "partitions": plan.in_partitions,
            "status_partitions": plan.out_partitions,
        }
        cfg["groups"] = {s: f"bench-{self.run}-{name}-{s}" for s in ("route", "deliver", "audit")}
        cfg["catalog"] = {"path": str(self.catalogs[mix])}
        cfg["runtime"] = {**cfg.get("runtime", {}), **runtime}
        if os.environ.get("BENCH_SETTINGS"):  # an experiment's settings, merged over every row's
            _merge(cfg, json.loads(os.environ["BENCH_SETTINGS"]))
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path


# What the instrumentation-cost rows change (issue 13: metrics on within 5% of off, tracing
# at 1% within 10% of none). Spans go to nginx, which answers 204 to OTLP's POST like a
# collector that keeps nothing: the export's whole client cost, none of a collector's.
OBSERVE_VARIANTS: dict[str, Callable[[World], dict[str, Any]]] = {
    "metrics-off": lambda w: {"metrics": False},
    "traced-1pct": lambda w: {
        "otlp_endpoint": f"http://127.0.0.1:{w.http.port}/v1/traces",
        "trace_sample_ratio": 0.01,
    },
}


def observe_variant(name: str) -> tuple[str, str]:
    """(`name` without its instrumentation suffix, the variant or "")."""
    for v in OBSERVE_VARIANTS:
        if name.endswith(f"-{v}"):
            return name.removesuffix(f"-{v}"), v
    return name, ""


def _webhook_provider() -> dict[str, Any]:
    """The webhook channel's settings: a fresh signing secret, plain HTTP to 127.0.0.1 allowed."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    return {
        "kind": "webhook",
        "secrets": [secret],
        "http": {"allow": ["127.0.0.1/32"], "allow_http": True},
    }


def make_world(seed: int) -> World:
    """Start the peers, write the catalogs and the base config; refuses non-local services."""
    from schemas.settings import load_settings

    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix=f"tidings-bench-{run}-"))
    s = load_settings()  # defaults + TIDINGS_* environment: where the local stack is
    for host in (s.kafka.bootstrap_servers.split(":")[0], s.postgres.host):
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"bench: refusing to send traffic to {host}; 127.0.0.1 only")
    try:
        smtp = start_smtp_sink(tmp)
        http = start_nginx(tmp)
    except PeerError as exc:
        raise SystemExit(f"bench: {exc}") from exc
    webhook_base = f"http://127.0.0.1:{http.port}"
    catalogs = {m: write_catalog(tmp / f"catalog-{m}", m, webhook_base) for m in MIXES}
    base = {
        "kafka": {"bootstrap_servers": s.kafka.bootstrap_servers},
        "postgres": {"host": s.postgres.host, "port": s.postgres.port},
        "redis": {"url": s.redis.url.get_secret_value(), "dedup_ttl_s": 900},
        "smtp": {"port": smtp.port},
        "channels": {"webhook": [_webhook_provider()]},
        "runtime": {"local_dir": str(tmp)},
        # Several stage processes at once: each serves /metrics on a free port.
        "observe": {"port": 0},
    }
    # A fresh database has no tables yet: the stages need deliveries, audit_log and inbox.
    from streams.state.db import apply_migrations

    apply_migrations(s.postgres.conninfo())
    return World(run, tmp, catalogs, s.kafka.bootstrap_servers, base, smtp, http)


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    """Merge `over` into `into`: dicts key by key, anything else replaced."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def send_concurrency(config: Path) -> dict[str, int]:
    """Sends in flight per channel that tidings allows with `config`: the limit rows use these.

    Mirrors processors/registry.py `_limit` (an SMTP provider: min(max_concurrency,
    pool_size)), capped by `runtime.send_concurrency`, for the first provider of each channel.
    """
    from schemas.providers import SmtpProviderSettings, WebhookProviderSettings
    from schemas.settings import load_settings

    s = load_settings(str(config))
    cap = s.runtime.send_concurrency
    smtp = SmtpProviderSettings(**s.smtp.model_dump())  # the implicit email provider
    hook = s.channels.webhook[0]
    assert isinstance(hook, WebhookProviderSettings)
    return {
        "email": min(cap, smtp.max_concurrency, smtp.pool_size),
        "webhook": min(cap, hook.max_concurrency),
    }


def ensure_topics(w: World, topics: dict[str, int]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": w.bootstrap})
    futs = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    for t, f in futs.items():
        with contextlib.suppress(Exception):
            f.result(30)
        w.topics.add(t)


def scenario_topics(w: World, config: Path) -> None:
    from schemas.settings import load_settings
    from streams.runtime.kafka import pipeline_topics

    s = load_settings(str(config))
    ensure_topics(w, pipeline_topics(s))


def produce(w: World, pool: EventPool, dataset: str, n: int, prefix: str, parts: int) -> float:
    """Pre-produce `n` events to the input topics of `dataset`; returns the seconds it took."""
    from confluent_kafka import Producer

    topics = [f"{w.in_prefix(dataset)}{t}" for t in EVENT_TYPES]
    ensure_topics(w, dict.fromkeys(topics, parts))
    p = Producer(
        {
            "bootstrap.servers": w.bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "batch.size": 1_000_000,
        }
    )
    t0 = time.monotonic()
    i = 0
    deadline = t0 + 600
    while i < n and time.monotonic() < deadline:
        r = pool.record(i, prefix)
        try:
            p.produce(topics[r.topic_index], r.value, headers=r.headers)
        except BufferError:
            p.poll(0.05)
            continue
        i += 1
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left:
        raise SystemExit(f"bench: {left} events not acknowledged by Kafka")
    return time.monotonic() - t0


# ---------------------------------------------------------------- measured processes


class Proc:
    """A runner process: its JSON counter lines, its latest quantiles, CPU and memory."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.lines: list[tuple[float, dict[str, int]]] = []
        self.quantiles: dict[str, float] = {}  # the "q" of its latest line that had one
        self._lock = threading.Lock()
        self._log = open(log, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log)
        self.ps = psutil.Process(self.popen.pid)
        self.hwm_kb = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                d = json.loads(raw)
                line = (float(d["t"]), {k: int(v) for k, v in d["c"].items()})
                q = {k: float(v) for k, v in (d.get("q") or {}).items()}
                with self._lock:
                    self.lines.append(line)
                    if q:
                        self.quantiles = q
            except (ValueError, KeyError, TypeError, AttributeError):
                continue

    def latest(self) -> tuple[float, dict[str, int]]:
        with self._lock:
            return self.lines[-1] if self.lines else (time.time(), {})

    def at(self, t: float) -> tuple[float, dict[str, int]]:
        """The last counter line at or before `t` (or the first one)."""
        with self._lock:
            best = self.lines[0] if self.lines else (t, {})
            for line in self.lines:
                if line[0] <= t:
                    best = line
                else:
                    break
            return best

    def cpu_s(self) -> float:
        try:
            c = self.ps.cpu_times()
            return float(c.user + c.system)
        except psutil.Error:
            return 0.0

    def sample_hwm(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
        if not self.hwm_kb:
            with contextlib.suppress(psutil.Error):
                self.hwm_kb = max(self.hwm_kb, self.ps.memory_info().rss // 1024)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting; `stop` waits."""
        self.sample_hwm()
        if self.alive():
            self.popen.terminate()

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM (if not sent yet), wait up to `timeout_s`, then SIGKILL; the exit code."""
        self.terminate()
        try:
            rc = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait(10)
        self._reader.join(5)  # the line printed on exit carries the final quantiles
        self._log.close()
        return rc


def _sum(procs: list[Proc], t: float | None) -> dict[str, int]:
    total: dict[str, int] = {}
    for p in procs:
        _, c = p.at(t) if t is not None else p.latest()
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def _key_total(procs: list[Proc], key: str) -> int:
    return _sum(procs, None).get(key, 0)


def _cpu_sample(procs: list[Proc], observe: list[Service]) -> tuple[float, dict[str, float]]:
    """(now, CPU seconds so far of every runner and observed service, by name)."""
    cpu = {p.name: p.cpu_s() for p in procs}
    cpu.update({o.name: o.cpu_s() for o in observe})
    return time.time(), cpu


def _spy(p: Proc, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy recording process `p` for `seconds` into `out` (raw format)."""
    argv = [str(Path(PY).parent / "py-spy"), "record", "--pid", str(p.popen.pid), "--format",
            "raw", "--rate", "100", "--duration", str(int(seconds)), "--threads",
            "--nonblocking", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_moving(name: str, procs: list[Proc], key: str) -> None:
    """Block until counter `key` moves (bounded: 90 s); RuntimeError if a process dies first."""
    start_deadline = time.monotonic() + 90
    while _key_total(procs, key) == 0:
        if time.monotonic() > start_deadline or not all(p.alive() for p in procs):
            raise RuntimeError(f"{name}: no progress on {key!r} (see logs in the run's tmp dir)")
        time.sleep(0.2)


def measure(
    name: str,
    procs: list[Proc],
    key: str,
    plan: Plan,
    profile_dir: Path | None = None,
    observe: list[Service] | None = None,
) -> dict[str, Any]:
    """Wait for `key` to move, warm up, then measure over the window; returns the raw numbers.

    The window ends after `plan.window_s`, or at the last progress of `key` when the input
    runs dry (no move for 3 s). CPU is sampled every 0.5 s, for every runner in `procs` and
    every service in `observe`, and taken at the window's ends: `cpu_s` (the runners' sum),
    `cpu_s_per_process`, `service_cpu_s`; counters per runner: `counts_per_process`.
    """
    observe = observe or []
    _wait_moving(name, procs, key)
    time.sleep(plan.warm_s)
    t0, cpu0 = _cpu_sample(procs, observe)
    spies = (
        []
        if profile_dir is None
        else [_spy(p, profile_dir / f"{name}-{p.name}.txt", plan.window_s) for p in procs]
    )
    last_total, (last_move, cpu_move) = _key_total(procs, key), (t0, cpu0)
    end = t0 + plan.window_s
    dry = False
    while time.time() < end:
        time.sleep(0.5)
        for p in procs:
            p.sample_hwm()
        if not all(p.alive() for p in procs):
            raise RuntimeError(f"{name}: a process died during the window")
        now, cpu = _cpu_sample(procs, observe)
        total = _key_total(procs, key)
        if total != last_total:
            last_total, last_move, cpu_move = total, now, cpu
        elif now - last_move > 3.0:
            dry = True  # input exhausted: measure up to the last progress
            break
    t1, cpu1 = (last_move, cpu_move) if dry else _cpu_sample(procs, observe)
    time.sleep(0.6)  # let the runners print the line at/after t1
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(plan.window_s + 30)
    c0, c1 = _sum(procs, t0), _sum(procs, t1)
    secs = max(1e-6, t1 - t0)
    rates = {k: (c1.get(k, 0) - c0.get(k, 0)) / secs for k in c1}
    delta = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 3) for k in cpu1}
    return {
        "window_s": round(secs, 2),
        "ran_dry": dry,
        "rates": {k: round(v, 1) for k, v in rates.items()},
        "counts": c1,
        "cpu_s": round(sum(delta[p.name] for p in procs), 3),
        "cpu_s_per_process": {p.name: delta[p.name] for p in procs},
        "counts_per_process": {p.name: _delta(p, t0, t1) for p in procs},
        "service_cpu_s": {o.name: delta[o.name] for o in observe},
        "peak_rss_mb": round(sum(p.hwm_kb for p in procs) / 1024, 1),
        "peak_rss_mb_per_process": {p.name: round(p.hwm_kb / 1024, 1) for p in procs},
    }


def _delta(p: Proc, t0: float, t1: float) -> dict[str, int]:
    """How much each counter of `p` grew between its lines at `t0` and at `t1`."""
    (_, a), (_, b) = p.at(t0), p.at(t1)
    return {k: v - a.get(k, 0) for k, v in b.items()}


@contextlib.contextmanager
def running(procs: list[Proc]) -> Iterator[list[Proc]]:
    """Yield `procs`; on the way out stop them all and warn about an unexpected exit code."""
    try:
        yield procs
    finally:
        for p in procs:  # all at once: each stage drains on its own
            p.terminate()
        for p in procs:
            rc = p.stop()
            if rc not in (0, -15, 143):
                print(f"  warning: {p.name} exited {rc}", flush=True)


def runner(w: World, name: str, kind: str, config: Path, *extra: str) -> Proc:
    argv = [PY, "-m", "bench.runners", kind, "--config", str(config), *extra]
    return Proc(name, argv, w.tmp / f"{name}.log")


# ---------------------------------------------------------------- scenarios


def _finish(r: dict[str, Any], events_per_s: float) -> dict[str, Any]:
    secs = r["window_s"]
    events = events_per_s * secs
    r["events_per_s"] = round(events_per_s, 1)
    r["cpu_s_per_1k_events"] = round(1000 * r["cpu_s"] / events, 3) if events else None
    return r


def run_raw(w: World, plan: Plan, prof: Path | None) -> dict[str, Any]:
    cfg = w.config("raw", "base", plan)
    out = f"bench.{w.run}.raw.out"
    ensure_topics(w, {out: plan.out_partitions})
    with running([runner(w, "raw", "raw", cfg, "--out-topic", out)]) as procs:
        r = measure("raw", procs, "events_in", plan, prof)
    return _finish(r, r["rates"].get("events_in", 0.0))


def run_faust(w: World, plan: Plan, prof: Path | None) -> dict[str, Any]:
    cfg = w.config("faust", "base", plan)
    scenario_topics(w, cfg)
    with running([runner(w, "faust", "faust", cfg)]) as procs:
        r = measure("faust", procs, "events_in", plan, prof)
    r = _finish(r, r["rates"].get("events_in", 0.0))
    r["notifications_per_s"] = r["rates"].get("queued", 0.0)
    return r


def run_route(
    w: World, plan: Plan, prof: Path | None, name: str = "route", cfg: Path | None = None
) -> dict[str, Any]:
    """The route stage alone on the base events, or as config `cfg` says (bench/directory.py)."""
    cfg = cfg or w.config(name, "base", plan, observe=observe_variant(name)[1])
    scenario_topics(w, cfg)
    with running([runner(w, name, "stages", cfg, "--stages", "route")]) as procs:
        r = measure(name, procs, "events_in", plan, prof)
    r = _finish(r, r["rates"].get("events_in", 0.0))
    r["notifications_per_s"] = r["rates"].get("queued", 0.0)
    return r


def _pipeline_result(r: dict[str, Any]) -> dict[str, Any]:
    rates, counts = r["rates"], r["counts"]
    per_event = counts.get("queued", 0) / max(1, counts.get("events_in", 0))
    route_eps = rates.get("events_in", 0.0)
    sent_eps = rates.get("sent", 0.0) / per_event if per_event else 0.0
    audit_eps = rates.get("audited", 0.0) / (2 * per_event) if per_event else 0.0
    r["stage_events_per_s"] = {
        "route": round(route_eps, 1),
        "deliver": round(sent_eps, 1),
        "audit": round(audit_eps, 1),
    }
    r["notifications_per_event"] = round(per_event, 3)
    r["notifications_per_s"] = round(
        min(rates.get("sent", 0.0), rates.get("queued", 0.0), rates.get("audited", 0.0) / 2), 1
    )
    return _finish(r, min(route_eps, sent_eps, audit_eps))


_CRASH_KEYS = (
    "crash_window_p50_ms",
    "crash_window_p99_ms",
    "crash_window_pg_p50_ms",
    "crash_window_pg_p99_ms",
)


def _crash_window(procs: list[Proc]) -> dict[str, Any]:
    """The deliver stage's crash window from the last line of every process that reports one.

    Each process reports quantiles over all its sends (warm-up and drain included). With
    several deliver processes, each figure is the max over them (quantiles don't add up).
    """
    reporting = [p for p in procs if p.quantiles]
    out: dict[str, Any] = {
        k: max((p.quantiles[k] for p in reporting if k in p.quantiles), default=None)
        for k in _CRASH_KEYS
    }
    out["crash_window_processes"] = len(reporting)
    return out


@dataclass(frozen=True)
class PipelineScenario:
    """A pipeline row's name, form and channel mix: `pipeline[-per-stage][-MIX]`.

    No mix suffix means email (the rows that existed before the mixes; their names stay).
    """

    name: str
    per_stage: bool
    mix: str
    deliver_workers: int = 1  # `-2w`: the per-stage form with two deliver processes
    observe: str = ""  # `-metrics-off`, `-traced-1pct`: OBSERVE_VARIANTS

    @classmethod
    def parse(cls, name: str) -> PipelineScenario:
        full = name
        name, observe = observe_variant(name)
        rest = name.removeprefix("pipeline")
        workers = 2 if rest.endswith("-2w") else 1
        rest = rest.removesuffix("-2w")
        per_stage = rest.startswith("-per-stage")
        mix = rest.removeprefix("-per-stage").removeprefix("-") or "email"
        if mix not in MIXES:
            raise ValueError(f"{name}: unknown channel mix {mix!r} (one of {', '.join(MIXES)})")
        if workers > 1 and not per_stage:
            raise ValueError(f"{name}: -2w is for the per-stage form")
        return cls(full, per_stage, mix, workers, observe)


PIPELINES = (
    *(
        f"pipeline{form}{'' if mix == 'email' else '-' + mix}"
        for form in ("", "-per-stage")
        for mix in MIXES
    ),
    "pipeline-per-stage-2w",
    "pipeline-per-stage-mixed-2w",
)
LIMITS = ("limit-smtp", "limit-aiohttp", "limit-httpx")
# The instrumentation-cost rows: the same as "route" / "pipeline-per-stage" but for that.
INSTRUMENTED = tuple(f"{base}-{v}" for base in ("route", "pipeline-per-stage")
                     for v in OBSERVE_VARIANTS)  # fmt: skip


def _observed(w: World, mix: str) -> list[Service]:
    """The shared processes whose CPU a pipeline row reports: the peers its channel mix sends
    to, the Kafka broker, Postgres and Redis."""
    peers = {"email": [w.smtp], "webhook": [w.http], "inapp": [], "mixed": [w.smtp, w.http]}
    return [*(Service(p.name, p.pid) for p in peers[mix]), *local_services()]


def run_pipeline(w: World, plan: Plan, sc: PipelineScenario, prof: Path | None) -> dict[str, Any]:
    """One pipeline row: one process (`tidings run --threads`), or one process per stage."""
    cfg = w.config(sc.name, sc.name, plan, sc.mix, sc.observe)
    scenario_topics(w, cfg)
    if sc.per_stage:
        stages = {f"{sc.name}-route": "route", f"{sc.name}-audit": "audit"}
        for i in range(sc.deliver_workers):
            stages[f"{sc.name}-deliver" + (f"-{i}" if sc.deliver_workers > 1 else "")] = "deliver"
    else:
        stages = {sc.name: "route,deliver,audit"}
    delivers = [proc for proc, g in stages.items() if g == "deliver"]
    procs = [runner(w, proc, "stages", cfg, "--stages", "deliver") for proc in delivers]
    if len(delivers) > 1:
        # Several deliver members join the group one after another: let the rebalances
        # settle before route feeds them, or the window would see a stall that isn't load.
        time.sleep(12.0)
    procs += [
        runner(w, proc, "stages", cfg, "--stages", g)
        for proc, g in stages.items()
        if proc not in delivers
    ]
    with running(procs):
        r = measure(sc.name, procs, "sent", plan, prof, _observed(w, sc.mix))
    r = _pipeline_result(r) | _crash_window(procs)  # after `running`: the exit line is read
    r["mix"] = sc.mix
    r["form"] = (
        (
            "one process per stage"
            + (f", deliver x{sc.deliver_workers}" if sc.deliver_workers > 1 else "")
        )
        if sc.per_stage
        else "one process (tidings run --threads)"
    )
    r["sent_per_s"] = r["rates"].get("sent", 0.0)
    r["stage_cpu"] = stage_accounting(r, stages)
    return r


def run_limit(w: World, plan: Plan, name: str, prof: Path | None) -> dict[str, Any]:
    """One limit row: a bare client (bench/limits.py) → its peer at tidings' concurrency."""
    kind = name.removeprefix("limit-")
    channel, peer = ("email", w.smtp) if kind == "smtp" else ("webhook", w.http)
    conc = send_concurrency(w.config(name, "base", plan))[channel]
    argv = [PY, "-m", "bench.limits", kind, "--port", str(peer.port), "--concurrency", str(conc),
            "--max-s", str(plan.warm_s + plan.window_s + 120)]  # fmt: skip
    with running([Proc(name, argv, w.tmp / f"{name}.log")]) as procs:
        r = measure(name, procs, "sent", plan, prof, [Service(peer.name, peer.pid)])
    sends = r["rates"].get("sent", 0.0)
    n = sends * r["window_s"]
    r.update(
        channel=channel,
        peer=peer.name,
        concurrency=conc,
        sends_per_s=round(sends, 1),
        failed=r["counts"].get("failed", 0),
        client_cpu_ms_per_send=round(1000 * r["cpu_s"] / n, 4) if n else None,
        peer_cpu_ms_per_send=round(1000 * r["service_cpu_s"][peer.name] / n, 4) if n else None,
    )
    return _finish(r, sends)


# ---------------------------------------------------------------- latency


class SentReader:
    """Reads `sent` statuses; latency = status record timestamp - event produce timestamp."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self._c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-lat-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self._c.subscribe([topic])
        self.by_level: dict[str, list[tuple[int, int]]] = {}
        self.last_ms = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for m in self._c.consume(1000, 0.2):
                if m.error() is not None:
                    continue
                hdrs = dict(m.headers() or [])
                if hdrs.get("ce_type") != b"notification.sent":
                    continue
                seen = int(time.time() * 1000)
                d = json.loads(m.value())["data"]
                level = str(d["source_event_id"]).split("-")[0]
                etime = d.get("event_time_ms")
                if not etime:
                    continue
                with self._lock:
                    self.by_level.setdefault(level, []).append(
                        (m.timestamp()[1] - etime, seen - etime)
                    )
                    self.last_ms = time.time()

    def count(self, level: str) -> int:
        with self._lock:
            return len(self.by_level.get(level, []))

    def close(self) -> None:
        self._stop.set()
        self._t.join(10)
        self._c.close()


def _pct(xs: list[int], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def run_latency(w: World, plan: Plan, max_eps: float, seed: int) -> list[dict[str, Any]]:
    """Offer 25/50/75% of `max_eps` to a fresh one-process pipeline; latency percentiles."""
    cfg = w.config("latency", "latency", plan)
    scenario_topics(w, cfg)
    ensure_topics(w, {f"{w.in_prefix('latency')}{t}": plan.in_partitions for t in EVENT_TYPES})
    from schemas.settings import load_settings

    status = load_settings(str(cfg)).topics.status
    reader = SentReader(w.bootstrap, status)
    out: list[dict[str, Any]] = []
    with running(
        [runner(w, "latency-pipeline", "stages", cfg, "--stages", "route,deliver,audit")]
    ) as procs:
        # Warm up: a little traffic, until the first statuses come back (bounded).
        _loadgen(w, 50, 3.0, "warm", seed)
        deadline = time.monotonic() + 60
        while reader.count("warm") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        for share in (0.25, 0.5, 0.75):
            level = f"lat{int(share * 100)}"
            rate = max(1.0, share * max_eps)
            cpu0 = procs[0].cpu_s()
            t0 = time.time()
            gen = _loadgen(w, rate, plan.latency_window_s, level, seed)
            # Drain: wait until no new `sent` arrives for 2 s (bounded).
            deadline = time.monotonic() + 60
            prev = -1
            while time.monotonic() < deadline:
                n = reader.count(level)
                if n == prev and time.time() - reader.last_ms > 2.0:
                    break
                prev = n
                time.sleep(0.5)
            cpu = procs[0].cpu_s() - cpu0
            with reader._lock:
                lat = list(reader.by_level.get(level, []))
            ts = [a for a, _ in lat]
            seen = [b for _, b in lat]
            out.append(
                {
                    "load_share": share,
                    "offered_events_per_s": round(rate, 1),
                    "produced": gen.get("produced"),
                    "generator_late_ms": gen.get("late_ms"),
                    "sent_statuses": len(lat),
                    "window_s": round(time.time() - t0, 1),
                    "cpu_s": round(cpu, 2),
                    "p50_ms": _pct(ts, 0.5),
                    "p95_ms": _pct(ts, 0.95),
                    "p99_ms": _pct(ts, 0.99),
                    "max_ms": float(max(ts)) if ts else float("nan"),
                    "visible_p50_ms": _pct(seen, 0.5),
                    "visible_p99_ms": _pct(seen, 0.99),
                }
            )
            print(
                f"  latency @{int(share * 100)}% ({rate:.0f} ev/s): p50 {out[-1]['p50_ms']:.0f}"
                f" p95 {out[-1]['p95_ms']:.0f} p99 {out[-1]['p99_ms']:.0f} ms",
                flush=True,
            )
    reader.close()
    return out


def _loadgen(
    w: World, rate: float, duration: float, prefix: str, seed: int, *, dataset: str = "latency"
) -> dict[str, Any]:
    argv = [
        PY,
        "-m",
        "bench.loadgen",
        "--bootstrap",
        w.bootstrap,
        "--topic-prefix",
        w.in_prefix(dataset),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--prefix",
        f"{prefix}-{w.run}",
        "--seed",
        str(seed),
    ]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=duration + 90, check=False)
    try:
        return dict(json.loads(res.stdout.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": res.stderr.decode()[-500:]}


# ---------------------------------------------------------------- cleanup


def cleanup(w: World) -> None:
    """Stop the peers; delete the run's topics, its Postgres rows and its tmp dir."""
    from confluent_kafka.admin import AdminClient

    from bench import directory

    directory.cleanup(w)  # the run's recipients and cap keys, if it made any
    w.smtp.stop()
    w.http.stop()
    if w.topics:
        admin = AdminClient({"bootstrap.servers": w.bootstrap})
        for f in admin.delete_topics(sorted(w.topics), operation_timeout=30).values():
            with contextlib.suppress(Exception):
                f.result(30)
    try:
        import psycopg

        from schemas.settings import load_settings

        s = load_settings()
        with psycopg.connect(s.postgres.conninfo()) as conn:
            like = f"%-{w.run}-%"
            conn.execute(
                "delete from inbox where notification_id in (select notification_id::text "
                "from audit_log where source_event_id like %s)",
                (like,),
            )
            conn.execute(
                "delete from deliveries where notification_id in (select notification_id::uuid "
                "from audit_log where source_event_id like %s)",
                (like,),
            )
            conn.execute("delete from audit_log where source_event_id like %s", (like,))
    except Exception as exc:  # cleanup must not hide the results
        print(f"  warning: Postgres cleanup failed: {exc}", flush=True)
    if os.environ.get("BENCH_KEEP_TMP"):  # the processes' logs and configs, for a look after
        print(f"  kept {w.tmp} (BENCH_KEEP_TMP)", flush=True)
        return
    shutil.rmtree(w.tmp, ignore_errors=True)


# ---------------------------------------------------------------- machine and versions


def _git(*args: str) -> str:
    """`git ARGS` in the checkout, stripped stdout ("" when git is missing or fails)."""
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def environment() -> dict[str, Any]:
    from importlib import metadata

    import confluent_kafka

    def ver(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    kafka = sorted(p.name for p in (ROOT / ".local").rglob("kafka_2.13-*.jar"))
    git = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka[0].removesuffix(".jar") if kafka else "?",
        "confluent_kafka": ver("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "faust_streaming": ver("faust-streaming"),
        "aiokafka": ver("aiokafka"),
        "cel_expr_python": ver("cel-expr-python"),
        "pydantic": ver("pydantic"),
        "jinja2": ver("Jinja2"),
        "git_commit": git + ("+dirty" if dirty else ""),
    }


# ---------------------------------------------------------------- main


# The recipient directory's rows (bench/directory.py): the import first (it generates the
# directory route-directory reads). Not in the quick set: even at 100,000 recipients its
# import and four route windows take a minute and a half.
DIRECTORY = ("directory-import", "route-directory")
DELIVER_ALONE = ("deliver-email", "deliver-webhook", "deliver-inapp")  # bench/deliver.py
# POST /v1/events per gateway process, and the HTTP stack's own limit (bench/gateway.py).
GATEWAY = ("limit-uvicorn", "gateway-events", "gateway-events-batch")
# Socket.IO connections per gateway process and publish → receipt latency
# (bench/gateway_sockets.py; Node's socket.io-client from bench/peers.sh).
GATEWAY_SOCKETS = ("gateway-sockets-10k", "gateway-sockets-latency", "gateway-sockets-ramp")
# The shipped command line at its highest open-loop rate (bench/sustained.py).
SUSTAINED = ("sustained", "sustained-2w", "sustained-threads")
SCENARIOS = (
    "raw", "faust", "route", *LIMITS, *PIPELINES, *DELIVER_ALONE, *INSTRUMENTED, *DIRECTORY,
    *GATEWAY, *GATEWAY_SOCKETS, *SUSTAINED, "latency",
)  # fmt: skip
# --quick without --only: every kind of row once (each mix, each form, each limit), ~3 min.
QUICK_SCENARIOS = (
    "raw", "faust", "route", *LIMITS,
    "pipeline", "pipeline-webhook", "pipeline-per-stage-mixed", "latency",
)  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.harness")
    ap.add_argument("--quick", action="store_true", help="short windows, under 3 minutes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--only",
        default="",
        help=f"comma list of {','.join(SCENARIOS)} (default: all; with --quick: "
        f"{','.join(QUICK_SCENARIOS)})",
    )
    ap.add_argument("--profile", action="store_true", help="py-spy each window; no report")
    ap.add_argument("--keep", action="store_true", help="keep topics, rows and tmp dir")
    args = ap.parse_args(argv)
    wanted = [x for x in args.only.split(",") if x]
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.wanted = set(wanted) or set(QUICK_SCENARIOS if args.quick else SCENARIOS)
    return args


def _workload(pool: EventPool, w: World) -> dict[str, Any]:
    """What the report says about the events and the catalogs (notifications per valid event)."""
    sizes = pool.sizes()
    mixes = {m: channel_shares(pool, w.catalogs[m]) for m in MIXES}
    return {
        "event_types": len(EVENT_TYPES),
        "rules": 5 * len(EVENT_TYPES),
        "channels": sorted({ch for shares in mixes.values() for ch in shares}),
        "invalid_share": round(pool.invalid_share(), 4),
        "valid_event_bytes_min": min(sizes),
        "valid_event_bytes_max": max(sizes),
        "valid_event_bytes_mean": round(sum(sizes) / len(sizes)),
        "notifications_per_valid_event": round(sum(mixes["email"].values()), 3),
        "mixes": {m: {ch: round(v, 3) for ch, v in sh.items()} for m, sh in mixes.items()},
    }


def _print_row(name: str, r: dict[str, Any]) -> None:
    """One scenario's line on the console."""
    if name in DIRECTORY:
        from bench import directory

        directory.print_row(name, r)
        return
    if name in GATEWAY:
        from bench import gateway

        gateway.print_row(name, r)
        return
    if name in SUSTAINED:
        from bench import sustained

        sustained.print_row(name, r)
        return
    if name in GATEWAY_SOCKETS:
        from bench import gateway_sockets

        gateway_sockets.print_row(name, r)
        return
    dry = "  (ran dry)" if r.get("ran_dry") else ""
    dry += f"  [{r.get('step_s', 0):.0f} s]"
    if name in DELIVER_ALONE:
        print(
            f"  {name:<27} {r['sent_per_s']:>10.0f} sent/s    deliver "
            f"{r['deliver_cpu_ms_per_send'] or 0:.3f} CPU ms/send, {r['deliver_cores']:.2f} cores "
            f"(route made the backlog in {r['route_s']:.0f} s){dry}",
            flush=True,
        )
        return
    if name in LIMITS:
        print(
            f"  {name:<27} {r['sends_per_s']:>10.0f} sends/s   client "
            f"{r['client_cpu_ms_per_send'] or 0:.3f} CPU ms/send, {r['peer']} "
            f"{r['peer_cpu_ms_per_send'] or 0:.3f} ms/send (x{r['concurrency']}){dry}",
            flush=True,
        )
        return
    print(
        f"  {name:<27} {r['events_per_s']:>10.0f} events/s  "
        f"{r['cpu_s_per_1k_events'] or 0:.3f} CPU s/1k  {r['peak_rss_mb']:.0f} MB{dry}",
        flush=True,
    )
    if "stage_cpu" in r:
        cells = [f"{x['process']} {x['cpu_s_per_1k'] or 0:.2f}" for x in r["stage_cpu"]]
        print(f"  {'':<27} {r['sent_per_s']:.0f} sent/s; CPU s/1k: {'; '.join(cells)}", flush=True)
    if r.get("crash_window_processes"):
        cw = {k: f"{r[k]:.3f}" if r.get(k) is not None else "-" for k in _CRASH_KEYS}
        print(
            f"  {'':<27} crash window p50 {cw['crash_window_p50_ms']} "
            f"p99 {cw['crash_window_p99_ms']} ms; until the Postgres commit "
            f"p50 {cw['crash_window_pg_p50_ms']} p99 {cw['crash_window_pg_p99_ms']} ms",
            flush=True,
        )


def _step(w: World, plan: Plan, name: str, pool: EventPool, prof: Path | None) -> dict[str, Any]:
    """Run scenario `name` (not latency) and return its result."""
    if name in LIMITS:
        return run_limit(w, plan, name, prof)
    if name.startswith("pipeline"):
        produce(w, pool, name, plan.pipeline_events, f"{name}-{w.run}", plan.in_partitions)
        return run_pipeline(w, plan, PipelineScenario.parse(name), prof)
    if name.startswith("route"):
        return run_route(w, plan, prof, name)
    runs = {"raw": run_raw, "faust": run_faust}
    return runs[name](w, plan, prof)


def _tidings_cpu(r: dict[str, Any]) -> float | None:
    """CPU s per 1k of all tidings stage processes of a row (route alone: its own)."""
    for row in r.get("stage_cpu") or []:
        if row.get("process") == "tidings, all stages":
            return row.get("cpu_s_per_1k")
    return r.get("cpu_s_per_1k_events")


def _paired(w: World, plan: Plan, name: str, pool: EventPool, prof: Path | None) -> dict[str, Any]:
    """An instrumentation-cost row: its base row and it, ABBA (base, it, it, base), so a drift
    of the machine over the four windows costs both alike; the ratios are of the sums."""
    base, _ = observe_variant(name)
    got: dict[str, list[dict[str, Any]]] = {base: [], name: []}
    for which in (base, name, name, base):
        got[which].append(_step(w, plan, which, pool, prof))
    r = dict(got[name][-1])

    def total(rows: list[dict[str, Any]], key: str) -> float:
        return sum(float(x.get(key) or 0.0) for x in rows)

    eps_b, eps_v = total(got[base], "events_per_s"), total(got[name], "events_per_s")
    cpu_b = sum(_tidings_cpu(x) or 0.0 for x in got[base])
    cpu_v = sum(_tidings_cpu(x) or 0.0 for x in got[name])
    r["paired"] = {
        "base": base,
        "base_events_per_s": [x.get("events_per_s") for x in got[base]],
        "events_per_s": [x.get("events_per_s") for x in got[name]],
        "base_cpu_s_per_1k": [_tidings_cpu(x) for x in got[base]],
        "cpu_s_per_1k": [_tidings_cpu(x) for x in got[name]],
        "eps_ratio": round(eps_v / eps_b, 4) if eps_b else None,
        "cpu_ratio": round(cpu_v / cpu_b, 4) if cpu_b else None,
    }
    return r


def _run_all(w: World, plan: Plan, args: argparse.Namespace, results: dict[str, Any]) -> None:
    pool = EventPool(args.seed)
    results["workload"] = _workload(pool, w)
    print(f"  workload: {results['workload']}", flush=True)
    if args.wanted & {"raw", "faust", "route", "route-metrics-off", "route-traced-1pct"}:
        secs = produce(w, pool, "base", plan.base_events, f"base-{w.run}", plan.in_partitions)
        print(f"  produced {plan.base_events} events in {secs:.1f} s", flush=True)
    sc: dict[str, Any] = results["scenarios"]
    for name in SCENARIOS:
        if name not in args.wanted or name == "latency":
            continue
        t0 = time.monotonic()
        try:
            if name in DIRECTORY:
                from bench import directory

                sc[name] = directory.run(w, plan, name, pool, quick=args.quick, seed=args.seed,
                                         prof=args.prof)  # fmt: skip
            elif name in DELIVER_ALONE:
                from bench import deliver

                sc[name] = deliver.run(w, plan, name, pool, quick=args.quick, prof=args.prof)
            elif name in GATEWAY:
                from bench import gateway

                sc[name] = gateway.run(w, plan, name, quick=args.quick)
            elif name in SUSTAINED:
                from bench import sustained

                sc[name] = sustained.run(w, plan, name, quick=args.quick, seed=args.seed)
            elif name in GATEWAY_SOCKETS:
                from bench import gateway_sockets

                sc[name] = gateway_sockets.run(w, plan, name, quick=args.quick)
            else:
                step = _paired if name in INSTRUMENTED else _step
                sc[name] = step(w, plan, name, pool, args.prof)
            sc[name]["step_s"] = round(time.monotonic() - t0, 1)
            _print_row(name, sc[name])
        except Exception as exc:
            sc[name] = {"error": str(exc)}
            print(f"  {name}: FAILED: {exc}", flush=True)
    if "latency" in args.wanted and not args.profile:
        max_eps = sc.get("pipeline", {}).get("events_per_s") or 500.0
        results["latency"] = run_latency(w, plan, float(max_eps), args.seed)
    results["ratios"] = ratios(sc)
    if args.wanted & set(SUSTAINED):
        from bench import sustained

        results["sustained_ratios"] = sustained.ratios(sc)
    results["deliver_vs_limit"] = deliver_vs_limit(sc)


def _summarize_profiles(prof: Path) -> None:
    from bench.profile import summarize

    for f in sorted(prof.glob("*.txt")):
        if f.name.endswith("-top.txt"):
            continue
        text = summarize(f)
        f.with_name(f.stem + "-top.txt").write_text(text)
        print(f"\n== {f.name}\n{text}", flush=True)


def _write(results: dict[str, Any], stamp: str) -> None:
    from bench.report import write_report

    RESULTS.mkdir(parents=True, exist_ok=True)
    js = RESULTS / f"{stamp}.json"
    js.write_text(json.dumps(results, indent=2, default=str) + "\n")
    png = RESULTS / f"{stamp}.png"
    write_report(results, ROOT / "docs" / "benchmarks.md", png, js)
    print(
        f"bench: wrote {js.relative_to(ROOT)}, {png.relative_to(ROOT)}, docs/benchmarks.md "
        f"in {results['elapsed_s']:.0f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the wanted scenarios in one world; write the JSON, the PNG and docs/benchmarks.md."""
    args = _parse(argv)
    plan = QUICK if args.quick else FULL
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    t_start = time.monotonic()
    env = environment()
    print(
        f"bench: {'QUICK ' if args.quick else ''}run on {env['logical_cores']} cores, "
        f"{env['memory_gib']} GiB, commit {env['git_commit']}",
        flush=True,
    )
    w = make_world(args.seed)
    args.prof = RESULTS / f"profile-{stamp}" if args.profile else None
    if args.prof is not None:
        args.prof.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "timestamp": stamp,
        "quick": args.quick,
        "seed": args.seed,
        "environment": env,
        "plan": plan.__dict__,
        "peers": {"smtp": w.smtp.name, "http": w.http.name},
        "scenarios": {},
    }
    try:
        _run_all(w, plan, args, results)
        results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    finally:
        if args.keep:
            print(f"  kept {w.tmp} and topics bench.{w.run}.*", flush=True)
        else:
            cleanup(w)
    if args.prof is not None:
        _summarize_profiles(args.prof)
        return 0
    _write(results, stamp)
    return 0


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    """Throughput ratios between rows of the same run (events/s)."""

    def eps(name: str) -> float | None:
        v = sc.get(name, {}).get("events_per_s")
        return float(v) if v else None

    def div(a: str, b: str) -> float | None:
        x, y = eps(a), eps(b)
        return round(x / y, 4) if x is not None and y else None

    return {
        "route/raw": div("route", "raw"),
        "route/faust": div("route", "faust"),
        "pipeline/raw": div("pipeline", "raw"),
        "pipeline-per-stage/raw": div("pipeline-per-stage", "raw"),
        # Issue 13's cost of instrumentation, from the ABBA pairs (`_paired`): events/s with
        # metrics on ÷ off (target ≥ 0.95), traced at 1% ÷ untraced (target ≥ 0.90), and the
        # tidings processes' CPU per 1k the other way round.
        **{k: v for name in INSTRUMENTED for k, v in _cost_ratios(sc, name).items()},
        **_directory_ratios(sc),
    }


def _directory_ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    from bench import directory

    return directory.ratios(sc)


def _cost_ratios(sc: dict[str, Any], name: str) -> dict[str, float | None]:
    p = (sc.get(name) or {}).get("paired")
    if not p:
        return {}
    base, variant = p["base"], name.removeprefix(p["base"] + "-")
    eps, cpu = p["eps_ratio"], p["cpu_ratio"]
    if variant == "metrics-off":  # reported as on ÷ off
        eps = round(1 / eps, 4) if eps else None
        cpu = round(1 / cpu, 4) if cpu else None
        label = f"{base} metrics on/off"
    else:
        label = f"{base} traced 1%/untraced"
    return {f"{label} (events/s)": eps, f"{label} (CPU s/1k)": cpu}


# The limit rows a channel mix's deliver rate is compared with: every client library the
# channel may be built on (processors/http.py picks aiohttp or httpx).
_LIMIT_OF = {"email": ("limit-smtp",), "webhook": ("limit-aiohttp", "limit-httpx")}


def deliver_vs_limit(sc: dict[str, Any]) -> list[dict[str, Any]]:
    """Deliver's sends/s in each single-channel pipeline row ÷ the limit row of that channel."""
    rows = []
    for name in PIPELINES:
        r = sc.get(name) or {}
        for lim in _LIMIT_OF.get(r.get("mix", ""), ()):
            limit = (sc.get(lim) or {}).get("sends_per_s")
            if "error" in r or not limit:
                continue
            rows.append(
                {
                    "scenario": name,
                    "limit": lim,
                    "sent_per_s": r["sent_per_s"],
                    "limit_sends_per_s": limit,
                    "ratio": round(r["sent_per_s"] / limit, 4),
                }
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
