"""Catalog.evaluate (and the route stage's pure per-record path) with a 50-rule catalog.

    .venv/bin/python bench/catalog_evaluate.py [--events 20000] [--rules 50]

Builds a throwaway catalog of N rules over 10 event types (N/10 rules per type, one
wildcard rule among them), then times, in one process on one thread:

- `evaluate`: Catalog.evaluate on ready envelopes (rule index, CEL `when`, recipients,
  variables, Match objects);
- `route_record`: streams.stages.route.route_record on encoded CloudEvents (JSON decode, evaluate,
  Notification + status encoding), i.e. the route stage's work per event without Kafka I/O.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

from catalog import load_catalog
from schemas.settings import load_settings
from streams.stages.route import route_record

TYPES = [f"shop.t{i}" for i in range(10)]


def build(root: Path, n_rules: int) -> None:
    rules = ["rules:"]
    for i in range(n_rules):
        etype = TYPES[i % len(TYPES)]
        events = f'["{etype}"]' if i != 7 else '["shop.*"]'
        threshold = (i // len(TYPES)) * 20  # 0, 20, 40, 60, 80: about half the rules match
        rules.append(
            f"""  - id: r{i}
    version: 1
    events: {events}
    when: "event.data.amount >= {threshold} && event.data.country in ['DE', 'AT', 'FR']"
    recipients:
      - "event.data.customer.email"
    channels: [email]
    template: t
    category: c{i % 3}
    idempotency_key: "event.id + ':r{i}'"
    variables:
      name: "event.data.customer.?name.orValue('there')"
      amount: "event.data.amount"
      items: "event.data.items.map(x, x.sku)"
"""
        )
    (root / "rules.yaml").write_text("\n".join(rules))
    tdir = root / "templates" / "t" / "email"
    tdir.mkdir(parents=True)
    (tdir / "subject.txt.j2").write_text("Hi {{ name }}")
    (tdir / "body.txt.j2").write_text("{{ amount }}")


def envelope(i: int) -> dict[str, object]:
    return {
        "id": f"e{i}",
        "type": TYPES[i % len(TYPES)],
        "source": "/bench",
        "subject": "",
        "time": "2026-01-05T00:00:00+00:00",
        "tenant": "",
        "data": {
            "amount": (i * 7) % 100,
            "country": "DE" if i % 4 else "US",
            "customer": {"email": f"c{i % 1000}@example.com", "name": "Ann"},
            "items": [{"sku": f"s{j}"} for j in range(3)],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rules", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.rules)
        catalog = load_catalog(tmp)
    now = dt.datetime.now(dt.UTC)
    envs = [envelope(i) for i in range(args.events)]
    for env in envs[:500]:  # warm-up
        catalog.evaluate(env, now)
    started = time.perf_counter()
    matches = sum(len(catalog.evaluate(env, now)) for env in envs)
    took = time.perf_counter() - started
    print(
        f"evaluate:     {args.events / took:>9,.0f} events/s "
        f"({len(catalog.rules)} rules, {len(catalog.rules_for(TYPES[0]))} per event type, "
        f"{matches / args.events:.2f} matches/event)"
    )
    settings = load_settings()
    records = [json.dumps({"specversion": "1.0", **e}).encode() for e in envs]
    started = time.perf_counter()
    for i, value in enumerate(records):
        route_record(
            topic="bench", partition=0, offset=i, timestamp_ms=None, key=None, value=value,
            headers=[], catalog=catalog, settings=settings, now=now,
        )  # fmt: skip
    took = time.perf_counter() - started
    print(f"route_record: {args.events / took:>9,.0f} events/s (decode + evaluate + encode)")


if __name__ == "__main__":
    main()
