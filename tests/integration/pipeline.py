"""Helpers for pipeline tests: a per-test world (topics, groups, catalog, SMTP sink), producers,
readers of what came out, and stage processes to kill.

Every test gets uuid-named topics and groups and its own catalog copy whose
rules also listen to the test's topics (so bare-JSON events, whose type is the
topic name, match too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer

from schemas.notification import notification_id
from schemas.recipient import Recipient
from schemas.settings import TidingsSettings, load_settings
from streams.app import run_stages
from streams.dev.demo import Mode, cloudevent, encode
from streams.dev.smtp_sink import SmtpSink
from streams.runtime.kafka import ensure_topics, pipeline_topics
from streams.runtime.metrics import Metrics
from streams.state.db import apply_migrations
from streams.state.directory import Directory

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """Everything one pipeline test owns."""

    unique: str
    tmp: Path
    config: Path
    settings: TidingsSettings
    sink: SmtpSink
    order_topic: str
    user_topic: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ------------------------------------------------------------ producing

    def producer(self) -> Producer:
        return Producer({**self.settings.kafka.client_config(), "enable.idempotence": True})

    def order_event(self, i: int, *, email: str | None = None) -> dict[str, Any]:
        data = {
            "order_id": f"ORD-{self.unique}-{i}",
            "customer": {
                "name": f"Customer {i}",
                "email": email or f"c{i}.{self.unique}@example.com",
            },
            "items": [{"name": "Widget", "quantity": 1 + i % 3, "price": 9.5}],
            "total": 9.5 * (1 + i % 3),
            "currency": "EUR",
        }
        return cloudevent("order.created", data, source=f"urn:test:{self.unique}",
                          event_id=f"evt-{self.unique}-{i}", tenant="acme")  # fmt: skip

    def send_to_user(self, rule: str, user: str, n: int) -> dict[str, Any]:
        """Produce event `n` of type `test.<unique>.<rule>` for directory user `user`
        (tenant `acme`); returns the CloudEvent."""
        doc = cloudevent(f"test.{self.unique}.{rule}", {"user_id": user},
                         source=f"urn:test:{self.unique}", event_id=f"{rule}-{self.unique}-{n}",
                         tenant="acme")  # fmt: skip
        p = self.producer()
        p.produce(self.user_topic, value=json.dumps(doc).encode(), key=user.encode())
        assert p.flush(30) == 0
        return doc

    def user_event(self, i: int) -> dict[str, Any]:
        data = {"user_id": f"u{i}", "name": f"User {i}", "email": f"u{i}.{self.unique}@example.com"}
        return cloudevent("user.registered", data, source=f"urn:test:{self.unique}",
                          event_id=f"usr-{self.unique}-{i}")  # fmt: skip

    def topic_for(self, doc: dict[str, Any]) -> str:
        return self.order_topic if doc["type"] == "order.created" else self.user_topic

    def send(self, items: list[tuple[dict[str, Any], Mode]]) -> list[str]:
        """Produce events; returns the notification id each must become, in order."""
        p = self.producer()
        ids: list[str] = [""] * len(items)
        for idx, (doc, mode) in enumerate(items):
            value, headers = encode(doc, mode)

            def on_delivery(err: Any, msg: Any, idx: int = idx, doc: dict[str, Any] = doc,
                            mode: Mode = mode) -> None:  # fmt: skip
                assert err is None, err
                where = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
                ids[idx] = self.expected_id(doc, mode, where)

            p.produce(self.topic_for(doc), value=value, headers=headers, on_delivery=on_delivery)
            p.poll(0)
        assert p.flush(30) == 0
        return ids

    # ------------------------------------------------------------ expectations

    def expected_id(self, doc: dict[str, Any], mode: Mode, where: str | None = None) -> str:
        """The notification id the pipeline must make for `doc` sent in `mode`."""
        if mode == "bare":
            assert where is not None, "bare events are identified by topic/partition/offset"
            topic = where.split("/")[0]
            return notification_id(f"kafka:{topic}", where, _rule(doc), _recipient(doc), "email")
        return notification_id(doc["source"], doc["id"], _rule(doc), _recipient(doc), "email")

    # ------------------------------------------------------------ reading outputs

    def mail(self) -> Counter[str]:
        """Notification ids of the .eml files in the sink, with how often each arrived."""
        got: Counter[str] = Counter()
        for f in self.sink.directory.glob("*.eml"):
            nid = f.name.split("@")[0].lstrip("<").split(".dup-")[0]
            got[nid] += 1
        return got

    def wait_mail(self, n: int, timeout_s: float = 90.0) -> Counter[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.mail()
            if sum(got.values()) >= n:
                return got
            self.check_procs()
            time.sleep(0.2)
        return self.mail()

    def read(self, topic: str, *, idle_s: float = 3.0, timeout_s: float = 60.0) -> list[Any]:
        """Every committed record of `topic`, read until `idle_s` passes with nothing new."""
        return read_committed(self.settings, topic, idle_s=idle_s, timeout_s=timeout_s)

    def statuses(self, idle_s: float = 3.0) -> Counter[tuple[str, str]]:
        """(notification id, status) → how many committed status events."""
        got: Counter[tuple[str, str]] = Counter()
        for ev in self.status_events(idle_s):
            d = ev["data"]
            got[(d["notification_id"], d["status"])] += 1
        return got

    def status_events(self, idle_s: float = 3.0) -> list[dict[str, Any]]:
        """Every committed status event (the whole CloudEvent), in topic order."""
        records = self.read(self.settings.topics.status, idle_s=idle_s)
        return [json.loads(m.value()) for m in records]

    # ------------------------------------------------------------ the directory

    def import_recipients(self, *recipients: Recipient) -> None:
        """Write `recipients` straight into the directory (what `tidings recipients import`
        does), before or between pipelines."""
        d = Directory(self.settings.postgres.conninfo())
        try:
            d.import_rows(list(recipients))
        finally:
            d.close()

    # ------------------------------------------------------------ running stages

    @contextmanager
    def pipeline(
        self, stages: tuple[str, ...] = ("route", "deliver", "audit")
    ) -> Iterator[Metrics]:
        """Run stages in this process (threads) for the duration of the block."""
        stop = threading.Event()
        metrics = Metrics()
        rc: list[int] = []
        t = threading.Thread(
            target=lambda: rc.append(run_stages(self.settings, stages, stop=stop, metrics=metrics)),
            name="pipeline",
        )
        t.start()
        try:
            yield metrics
        finally:
            stop.set()
            t.join(60)
        assert not t.is_alive(), "pipeline did not stop within 60 s"
        assert rc == [0], f"pipeline exited {rc}"

    def spawn(
        self,
        stage: str,
        *,
        kill_after_sends: int | None = None,
        kill_at: str = "recorded",
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """Start `tidings run --stage STAGE` as its own process (to kill it).

        `kill_after_sends`: a deliver process that SIGKILLs itself after that many recorded
        sends, before their offsets are committed; `kill_at` moves the kill to the N-th claim
        (`claimed`) or the N-th provider answer (`accepted`) (tests/integration/crash_entry.py).
        """
        argv = [sys.executable, "-m", "streams.cli", "--config", str(self.config),
                "run", "--stage", stage]  # fmt: skip
        if kill_after_sends is not None:
            assert stage == "deliver", "the crash hook is a deliver send hook"
            argv = [sys.executable, "-m", "tests.integration.crash_entry", "--config",
                    str(self.config), "--kill-after", str(kill_after_sends),
                    "--kill-at", kill_at, stage]  # fmt: skip
        # The child keeps its own copy of the descriptor; ours closes at once.
        with open(self.tmp / f"{stage}-{len(self.procs)}.log", "wb") as log:
            p = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        self.procs.append(p)
        return p

    def log_tail(self, p: subprocess.Popen[bytes], lines: int = 40) -> str:
        """The last lines a spawned stage process wrote, for assertion messages."""
        idx = self.procs.index(p)
        stage = p.args[-1] if isinstance(p.args, list) else "?"
        path = self.tmp / f"{stage}-{idx}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_procs(self) -> None:
        for p in self.procs:
            rc = p.poll()
            if rc not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                raise AssertionError(f"stage process exited {rc}; logs in {self.tmp}")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@contextmanager
def http_stage(
    settings: TidingsSettings, stage: str, base_url: str, *, also: tuple[str, ...] = ()
) -> Iterator[None]:
    """Run the HTTP stage `stage` (and the stages `also`: `run_stages`, on a thread) until
    `base_url`/healthz answers 200 (≤ 30 s); on exit stop them, and check they stopped
    cleanly within 60 s."""
    import httpx

    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(
        target=lambda: rc.append(run_stages(settings, (stage, *also), stop=stop)), name=stage
    )
    t.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert t.is_alive() and time.monotonic() < deadline, f"{stage} did not start: {rc}"
            time.sleep(0.1)
        yield
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive(), f"{stage} stage did not stop within 60 s"
    assert rc == [0], f"{stage} stage exited {rc}"


def stored_addresses(pg: Any, tenant: str) -> int:
    """How many addresses the directory's rows of `tenant` hold (hidden dead ones too)."""
    row = pg.execute(
        "select coalesce(sum(json_array_length(addresses)), 0) from recipients where tenant = %s",
        (tenant,),
    ).fetchone()
    return int(row[0]) if row else 0


def read_committed(
    settings: TidingsSettings, topic: str, *, idle_s: float = 3.0, timeout_s: float = 60.0
) -> list[Any]:
    """Every committed record of `topic` (new group), until `idle_s` passes with nothing new."""
    group = f"reader-{os.urandom(4).hex()}"
    c = Consumer({**settings.kafka.client_config(), "group.id": group,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic])
    out: list[Any] = []
    last = time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() - last < idle_s and time.monotonic() < deadline:
        for m in c.consume(500, 0.3):
            if m.error() is None:
                out.append(m)
                last = time.monotonic()
    c.close()
    return out


def _rule(doc: dict[str, Any]) -> str:
    return "order-confirmation" if doc["type"] == "order.created" else "welcome"


def _recipient(doc: dict[str, Any]) -> str:
    d = doc["data"]
    return str(d["customer"]["email"] if doc["type"] == "order.created" else d["email"])


def make_world(
    base: TidingsSettings, unique: str, tmp: Path, *, runtime: dict[str, Any] | None = None,
    sink_delay_s: float = 0.0, extra: Callable[[int], dict[str, Any]] | None = None,
) -> World:  # fmt: skip
    """Create topics, a catalog copy, an SMTP sink and a config file for one test."""
    order_topic, user_topic = f"test.{unique}.order.created", f"test.{unique}.user.registered"
    cat = tmp / "catalog"
    shutil.copytree(ROOT / "examples/catalog", cat)
    # These events address people directly; the directory's rules have their own tests.
    (cat / "rules/directory.yaml").unlink()
    rules = (cat / "rules.yaml").read_text()
    rules = rules.replace(
        'events: ["order.created"]', f'events: ["order.created", "{order_topic}"]'
    )
    rules = rules.replace(
        'events: ["user.registered"]', f'events: ["user.registered", "{user_topic}"]'
    )
    (cat / "rules.yaml").write_text(rules)
    sink = SmtpSink(tmp / "mail", port=0, delay_s=sink_delay_s)
    (tmp / "mail").mkdir()
    sink.start()
    cfg: dict[str, Any] = {
        "kafka": {"bootstrap_servers": base.kafka.bootstrap_servers},
        "postgres": {"host": base.postgres.host, "port": base.postgres.port},
        "redis": {"url": base.redis.url.get_secret_value()},
        "topics": {
            "events": [order_topic, user_topic],
            "dispatch_prefix": f"test.{unique}.dispatch.",
            "status": f"test.{unique}.status",
            "dlq": f"test.{unique}.dlq",
            "retry_prefix": f"test.{unique}.retry.",
            "notify": f"test.{unique}.notify",
            "partitions": 3,
            "status_partitions": 3,
        },
        "groups": {"route": f"route-{unique}", "deliver": f"deliver-{unique}",
                   "audit": f"audit-{unique}"},
        "smtp": {"port": sink.port},
        "catalog": {"path": str(cat)},
        "runtime": {"claim_lease_s": 3.0, "drain_timeout_s": 15.0, "retry_backoff_s": 0.05,
                    **(runtime or {})},
        "observe": {"port": 0},
    }  # fmt: skip
    # `extra` gets the sink's port, so provider chains can point at it.
    # Sections are merged one level deep: `{"topics": {"recipients": …}}` keeps the others.
    for section, value in (extra(sink.port) if extra else {}).items():
        old = cfg.get(section)
        cfg[section] = (
            {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
        )
    config = tmp / "tidings.yaml"
    config.write_text(yaml.safe_dump(cfg))
    settings = load_settings(str(config))
    ensure_topics(settings, pipeline_topics(settings))
    apply_migrations(settings.postgres.conninfo())
    return World(unique, tmp, config, settings, sink, order_topic, user_topic)


Waiter = Callable[[], bool]


def wait_until(cond: Waiter, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
