"""The gateway rows of `make bench` (issue 15, "Performance"): `POST /v1/events` per process.

- `gateway-events`: one CloudEvent per request; `gateway-events-batch`: 100 per request
  (`application/cloudevents-batch+json`). The real gateway stage (`tidings run --stage
  gateway`, its own process) with a real API key, producing to a bench topic and answering
  202 after the broker's acks.
- `limit-uvicorn`: the same requests to FastAPI on uvicorn answering 202 after reading the
  body and nothing else (bench/gateway_limit.py): what the HTTP stack alone costs, so
  "gateway / limit" is measured side by side.

The load generator is ApacheBench (`ab`, C, keep-alive, `CONCURRENCY` connections; unpacked
from Debian by bench/peers.sh), its own process, so the peer is never the bottleneck.
Reported: events/s and requests/s over the run, the gateway process's CPU per 1,000 events,
ab's and the broker's. Traffic only to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from bench.accounting import local_services
from bench.harness import PY, ROOT, Plan, World, ensure_topics

__all__ = ["SCENARIOS", "markdown", "print_row", "run"]

SCENARIOS = ("limit-uvicorn", "gateway-events", "gateway-events-batch")
CONCURRENCY = 32
BATCH = 100
_PEERS = ROOT / ".local" / "peers"
_AB = _PEERS / "apache2-utils" / "usr" / "bin" / "ab"
_LIBS = ":".join(
    str(_PEERS / p / "usr" / "lib" / "x86_64-linux-gnu") for p in ("libapr1", "libaprutil1")
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(topic: str, i: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"bench-{i}",
        "type": topic,
        "source": "urn:bench",
        "subject": f"order-{i % 1000}",
        "data": {
            "order_id": i,
            "total": 42.5,
            "customer": {"id": f"c-{i}", "email": f"c{i}@example.com"},
        },
    }


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited {proc.returncode} before it answered")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: no answer within {timeout_s:.0f} s")


def _cpu(p: psutil.Process) -> float:
    c = p.cpu_times()
    return c.user + c.system + c.children_user + c.children_system


def _ab(url: str, body: Path, ctype: str, requests: int, key: str | None) -> dict[str, Any]:
    argv = [
        str(_AB),
        "-q",
        "-k",
        "-n",
        str(requests),
        "-c",
        str(CONCURRENCY),
        "-p",
        str(body),
        "-T",
        ctype,
    ]
    if key:
        argv += ["-H", f"Authorization: Bearer {key}"]
    argv.append(f"{url}/v1/events")
    env = {**os.environ, "LD_LIBRARY_PATH": _LIBS}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ab = psutil.Process(proc.pid)
    ab_cpu = 0.0
    try:
        while proc.poll() is None:
            ab_cpu = max(ab_cpu, _cpu(ab))
            time.sleep(0.05)
    except psutil.NoSuchProcess:
        pass
    out, err = proc.communicate(timeout=600)
    took = time.monotonic() - t0
    text = out.decode()
    if proc.returncode != 0:
        raise RuntimeError(f"ab failed ({proc.returncode}): {err.decode()[-300:]}")
    failed = int(m.group(1)) if (m := re.search(r"Failed requests:\s+(\d+)", text)) else -1
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx responses:\s+(\d+)", text)) else 0
    if failed or non2xx:
        raise RuntimeError(f"ab: {failed} failed, {non2xx} non-2xx requests of {requests}")
    p50 = re.search(r"\s50%\s+(\d+)", text)
    p99 = re.search(r"\s99%\s+(\d+)", text)
    return {
        "seconds": took,
        "ab_cpu_s": ab_cpu,
        "p50_ms": int(p50.group(1)) if p50 else None,
        "p99_ms": int(p99.group(1)) if p99 else None,
    }


def _serve(w: World, name: str, topic: str) -> tuple[subprocess.Popen[bytes], str, str | None]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if name == "limit-uvicorn":
        proc = subprocess.Popen([PY, "-m", "bench.gateway_limit", str(port)], cwd=ROOT)
        return proc, url, None
    cfg = json.loads(json.dumps(w.base))
    cfg["topics"] = {"events": [topic], "partitions": 6}
    # The limit protects a shared cluster; here it would cap the measurement itself.
    cfg["gateway"] = {"port": port, "rate_limit_per_s": 0}
    path = w.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    tidings = str(Path(PY).parent / "tidings")
    key = subprocess.run(
        [
            tidings,
            "--config",
            str(path),
            "apikeys",
            "create",
            f"bench-{w.run}",
            "--scope",
            "events:write",
            "--name",
            "bench",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [tidings, "--config", str(path), "run", "--stage", "gateway"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return proc, url, key


def run(w: World, plan: Plan, name: str, *, quick: bool) -> dict[str, Any]:
    """One row: serve, warm up, load with ab, report."""
    if not _AB.exists():
        raise RuntimeError(f"{_AB} is missing: bench/peers.sh unpacks it (make bench)")
    topic = f"bench.{w.run}.gateway.order.created"
    ensure_topics(w, {topic: 6})
    batch = name.endswith("-batch")
    per_request = BATCH if batch else 1
    requests = (2_000 if batch else 20_000) // (4 if quick else 1)
    body = w.tmp / f"{name}.json"
    doc: Any = [_event(topic, i) for i in range(BATCH)] if batch else _event(topic, 0)
    body.write_text(json.dumps(doc))
    ctype = "application/cloudevents-batch+json" if batch else "application/cloudevents+json"
    proc, url, key = _serve(w, name, topic)
    broker = [s for s in local_services() if s.name == "kafka"]
    try:
        _wait_up(url, proc)
        server = psutil.Process(proc.pid)
        _ab(url, body, ctype, max(CONCURRENCY * 4, requests // 10), key)  # warm up
        cpu0, b0 = _cpu(server), broker[0].cpu_s() if broker else 0.0
        r = _ab(url, body, ctype, requests, key)
        cpu = _cpu(server) - cpu0
        broker_cpu = (broker[0].cpu_s() - b0) if broker else None
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    events = requests * per_request
    return {
        "requests": requests,
        "events_per_request": per_request,
        "concurrency": CONCURRENCY,
        "seconds": round(r["seconds"], 2),
        "requests_per_s": round(requests / r["seconds"], 1),
        "events_per_s": round(events / r["seconds"], 1),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_s_per_1k_events": round(cpu / events * 1000, 3),
        "server_cores": round(cpu / r["seconds"], 2),
        "ab_cpu_s_per_1k_requests": round(r["ab_cpu_s"] / requests * 1000, 3),
        "broker_cpu_s_per_1k_events": round(broker_cpu / events * 1000, 3) if broker_cpu else None,
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
    }


def print_row(name: str, r: dict[str, Any]) -> None:
    print(
        f"  {name:<27} {r['events_per_s']:>10.0f} events/s  {r['requests_per_s']:.0f} req/s, "
        f"server {r['server_cpu_s_per_1k_events']:.3f} CPU s/1k events "
        f"({r['server_cores']:.2f} cores), p50 {r['p50_ms']} p99 {r['p99_ms']} ms "
        f"[{r.get('step_s', 0):.0f} s]",
        flush=True,
    )


def markdown(sc: dict[str, Any]) -> list[str]:
    """The docs/benchmarks.md section of these rows (none when none ran)."""
    rows = [(n, sc[n]) for n in SCENARIOS if n in sc and "error" not in sc[n]]
    if not rows:
        return []
    limit = sc.get("limit-uvicorn", {}).get("requests_per_s")
    out = [
        "## The gateway: POST /v1/events (issue 15)",
        "",
        f"bench/gateway.py. ApacheBench (C, keep-alive, {CONCURRENCY} connections) against one "
        "gateway process (`tidings run --stage gateway`, real API key, produced to a 6-partition "
        "topic, 202 after the broker's acks), and against FastAPI on uvicorn answering 202 and "
        "nothing else (`limit-uvicorn`). *vs limit*: requests/s over the limit row's.",
        "",
        "| row | events/request | requests/s | events/s | server CPU s / 1k events | server cores "
        "| p50 / p99 ms | broker CPU s / 1k events | vs limit |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for n, r in rows:
        vs = f"{r['requests_per_s'] / limit:.2f}" if limit and n != "limit-uvicorn" else ""
        out.append(
            f"| {n} | {r['events_per_request']} | {r['requests_per_s']:,.0f} | "
            f"{r['events_per_s']:,.0f} | {r['server_cpu_s_per_1k_events']:.3f} | "
            f"{r['server_cores']:.2f} | {r['p50_ms']} / {r['p99_ms']} | "
            f"{r['broker_cpu_s_per_1k_events'] or '-'} | {vs} |"
        )
    return [*out, ""]
