"""Sends/s of one deliver process over HTTP: signed webhooks and Slack posts to a local endpoint.

Routes N critical infra alerts first (each alert: one Slack post and one webhook, every alert to
its own URL so per-recipient order does not serialise them), then times the deliver stage alone
draining the dispatch topics against `scripts/http_sink.py` (its own process), which answers at
once or after `--sink-delay-s`.

    .venv/bin/python scripts/measure_deliver_webhook.py [--events 3000] [--sink-delay-s 0.2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.dev.demo import cloudevent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_pipeline import deliver_only, free_port, prepare, wait_port

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--sink-delay-s", type=float, default=0.0)
    ap.add_argument("--provider-limit", type=int, default=32, help="max_concurrency")
    ap.add_argument("--concurrency", type=int, default=64, help="runtime.send_concurrency")
    args = ap.parse_args()
    u = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="tidings-measure-http-"))
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts/http_sink.py"), "--port", str(port),
         "--delay-s", str(args.sink_delay_s)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_port(port)
    base = f"http://127.0.0.1:{port}"
    topic = f"measure.{u}.alerts"
    cat = tmp / "catalog"
    shutil.copytree(ROOT / "examples/catalog", cat)
    infra = (cat / "rules/infra.yaml").read_text()
    infra = infra.replace('events: ["infra.alert.*"]', f'events: ["infra.alert.*", "{topic}"]')
    infra = infra.replace(
        "\"'https://hooks.slack.com/services/T0000/B0000/ops-alerts'\"",
        f"\"'{base}/slack/' + event.data.alert_id\"",
    )
    (cat / "rules/infra.yaml").write_text(infra)
    http = {"allow": ["127.0.0.1/32"], "allow_http": True}
    lim = args.provider_limit
    cfg: dict[str, Any] = {
        "topics": {"events": [topic], "dispatch_prefix": f"measure.{u}.dispatch.",
                   "status": f"measure.{u}.status", "dlq": f"measure.{u}.dlq",
                   "retry_prefix": f"measure.{u}.retry."},
        "groups": {"route": f"m-route-{u}", "deliver": f"m-deliver-{u}", "audit": f"m-audit-{u}"},
        "channels": {
            "webhook": [{"kind": "webhook", "secrets": ["whsec_" + "A" * 32], "http": http,
                         "max_concurrency": lim}],
            "slack": [{"kind": "slack", "allowed_hosts": ["127.0.0.1"], "http": http,
                       "max_concurrency": lim}],
        },
        "runtime": {"send_concurrency": args.concurrency},
        "catalog": {"path": str(cat)},
    }  # fmt: skip
    s = prepare(tmp, cfg)
    p = Producer({**s.kafka.client_config(), "linger.ms": 20})
    for i in range(args.events):
        doc = cloudevent(
            "infra.alert.database",
            {"alert_id": f"A-{u}-{i}", "severity": "critical", "service": "db",
             "summary": "replication lag", "pager_url": f"{base}/hook/{i}"},
            source=f"urn:tidings:measure:{u}", tenant="platform", event_id=f"alert-{u}-{i}",
        )  # fmt: skip
        p.produce(topic, value=json.dumps(doc).encode())
        p.poll(0)
    p.flush(60)
    rc = deliver_only(s, args.events)
    sink.terminate()
    out, _ = sink.communicate(timeout=10)
    print(f"http sink: {out.strip()}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
