"""The recipients stage and the directory on the real stack: the topic materialises into
Postgres in offset order, idempotently, through bad records and a kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from schemas.recipient import (
    TENANT_DEFAULTS,
    Address,
    Preferences,
    Recipient,
    RecipientChange,
    recipient_key,
    tenant_defaults_key,
)
from schemas.settings import TidingsSettings, load_settings
from streams.app import run_stages
from streams.cli.main import main
from streams.runtime.dead_letter import header_map
from streams.runtime.kafka import ensure_topics
from streams.state.db import apply_migrations
from streams.state.directory import Directory
from streams.state.recipient_rows import delete_change, upsert_change
from tests.integration.pipeline import read_committed, stored_addresses, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PG = psycopg.Connection[tuple[Any, ...]]


@dataclass
class Topic:
    """One test's recipients topic, DLQ, group, tenant and config file."""

    settings: TidingsSettings
    config: Path
    tenant: str
    tmp: Path

    @property
    def topic(self) -> str:
        return self.settings.topics.recipients

    def producer(self) -> Producer:
        return Producer({**self.settings.kafka.client_config(), "enable.idempotence": True,
                         "linger.ms": 5})  # fmt: skip

    def send(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        p = self.producer()
        errors: list[Any] = []
        for key, value in records:
            p.produce(self.topic, key=key, value=value,
                      on_delivery=lambda err, _m: errors.append(err) if err else None)  # fmt: skip
            p.poll(0)
        assert p.flush(30) == 0 and not errors, errors

    def recipient(self, rid: str, **kw: Any) -> Recipient:
        return Recipient(tenant=self.tenant, id=rid, **kw)

    def upsert(self, r: Recipient) -> tuple[bytes, bytes]:
        return r.key(), upsert_change(r).model_dump_json().encode()

    def delete(self, rid: str) -> tuple[bytes, bytes]:
        return recipient_key(self.tenant, rid), delete_change(self.tenant, rid).model_dump_json(
        ).encode()  # fmt: skip

    def tombstone(self, rid: str) -> tuple[bytes, None]:
        return recipient_key(self.tenant, rid), None

    @contextmanager
    def stage(self) -> Iterator[None]:
        """The recipients stage in this process (a thread) for the block."""
        stop = threading.Event()
        rc: list[int] = []
        t = threading.Thread(
            target=lambda: rc.append(run_stages(self.settings, ("recipients",), stop=stop)),
            name="recipients-test",
        )
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(60)
        assert not t.is_alive() and rc == [0], f"stage exited {rc}"

    def spawn(self, n: int) -> subprocess.Popen[bytes]:
        """`tidings run --stage recipients` as its own process, logging to recipients-N.log."""
        with open(self.tmp / f"recipients-{n}.log", "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "--config", str(self.config),
                 "run", "--stage", "recipients"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
            )  # fmt: skip

    def log(self, n: int) -> str:
        p = self.tmp / f"recipients-{n}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-30:]) if p.exists() else ""


@pytest.fixture
def rt(
    settings: TidingsSettings, unique: str, tmp_path: Path, kafka_admin: AdminClient, pg: PG
) -> Iterator[Topic]:
    cfg = {
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "postgres": {"host": settings.postgres.host, "port": settings.postgres.port},
        "topics": {"recipients": f"test.{unique}.recipients", "dlq": f"test.{unique}.dlq",
                   "partitions": 3},
        "groups": {"recipients": f"recipients-{unique}"},
        "runtime": {"batch_size": 100, "drain_timeout_s": 10.0},
        "observe": {"port": 0},
    }  # fmt: skip
    config = tmp_path / "tidings.yaml"
    config.write_text(yaml.safe_dump(cfg))
    s = load_settings(str(config))
    topics = {s.topics.recipients: 3, s.topics.dlq: 1}
    ensure_topics(s, topics)
    apply_migrations(s.postgres.conninfo())
    tenant = f"t-{unique}"
    yield Topic(s, config, tenant, tmp_path)
    pg.execute("delete from recipients where tenant = %s", (tenant,))
    for f in kafka_admin.delete_topics(list(topics), operation_timeout=30).values():
        f.result(timeout=30)


def stored(rt: Topic, ids: list[str]) -> dict[str, Recipient]:
    d = Directory(rt.settings.postgres.conninfo())
    try:
        return {k[1]: r for k, r in d.lookup([(rt.tenant, i) for i in ids]).items()}
    finally:
        d.close()


# ------------------------------------------------------------ through the stage


def test_upserts_and_deletes_materialise_and_the_topic_is_compacted(
    rt: Topic, pg: PG, kafka_admin: AdminClient
) -> None:
    res = ConfigResource(ConfigResource.Type.TOPIC, rt.topic)
    conf = kafka_admin.describe_configs([res])[res].result(30)
    assert conf["cleanup.policy"].value == "compact"

    push = [Address(channel="push", address=f"tok-{i}", platform="fcm") for i in range(2)]
    u1_old = rt.recipient("u1", email="old@example.com", addresses=tuple(push))
    u1 = rt.recipient(
        "u1",
        email="new@example.com",
        locale="fr",
        addresses=(push[1],),
        attributes={"plan": "pro"},
        preferences={"categories": ["billing"]},  # a category of the example catalog
    )
    u2 = rt.recipient("u2", phone="+14155550123", addresses=tuple(push))
    u3 = rt.recipient("u3", email="u3@example.com")
    u4 = rt.recipient("u4", email="u4@example.com")
    rt.send([rt.upsert(u1_old), rt.upsert(u2), rt.upsert(u3), rt.upsert(u4), rt.upsert(u1),
             rt.delete("u2"), rt.tombstone("u3")])  # fmt: skip
    ids = ["u1", "u2", "u3", "u4"]
    with rt.stage():
        wait_until(lambda: set(stored(rt, ids)) == {"u1", "u4"}, 60, "u1 and u4 only")
    got = stored(rt, ids)
    assert got["u1"] == u1
    assert got["u1"].preferences.categories == ("billing",)
    assert got["u4"] == u4
    assert stored_addresses(pg, rt.tenant) == 1, "u2's addresses went with it"


def test_a_malformed_record_is_dead_lettered_and_the_next_one_applied(rt: Topic) -> None:
    good = rt.recipient("u1", email="ok@example.com")
    other = rt.recipient("u2", email="two@example.com")
    key = good.key()
    too_long = upsert_change(good).model_dump(mode="json")
    too_long["data"]["id"] = "x" * 10_000
    rt.send([
        (key, b"{not json"),
        (key, json.dumps(too_long).encode()),
        (key, rt.upsert(other)[1]),  # its data names u2: the key says u1
        (key, b'{"specversion": "1.0", "id": "e1", "source": "s", '
              b'"type": "tidings.recipient.renamed", "data": {"id": "u1"}}'),
        rt.upsert(good.model_copy(update={"preferences": Preferences(categories=("nope",))})),
        rt.upsert(good),
    ])  # fmt: skip
    with rt.stage():
        wait_until(lambda: "u1" in stored(rt, ["u1"]), 60, "the good record applied")
        dead = read_committed(rt.settings, rt.settings.topics.dlq, idle_s=2.0)
    assert stored(rt, ["u1", "u2"]) == {"u1": good}
    assert len(dead) == 5
    for m in dead:
        h = header_map(m.headers())
        assert (h["tidings-dlq-stage"], h["tidings-dlq-reason"]) == (
            "recipients", "invalid_recipient",
        )  # fmt: skip
        assert m.key() == key
    assert dead[0].value() == b"{not json", "dead letters keep the record byte for byte"
    assert "doesn't match its data" in header_map(dead[2].headers())["kafka_dlt-exception-message"]
    unknown = header_map(dead[4].headers())["kafka_dlt-exception-message"]
    assert "preferences.categories: unknown category 'nope'" in unknown
    assert "billing, onboarding, operations, security, shipping" in unknown, "the valid ones"


def test_publish_puts_a_file_on_the_topic_for_the_stage(rt: Topic, tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text(
        "\n".join(
            json.dumps({"tenant": rt.tenant, "id": f"p{i}", "email": f"p{i}@example.com"})
            for i in range(20)
        )
    )
    assert main(["--config", str(rt.config), "recipients", "publish", str(f)]) == 0
    with rt.stage():
        wait_until(lambda: len(stored(rt, [f"p{i}" for i in range(20)])) == 20, 60, "20 stored")


def test_tenant_defaults_published_on_the_topic_are_applied_by_the_stage(rt: Topic, pg: PG) -> None:
    def defaults() -> tuple[Preferences, tuple[str, ...]]:
        d = Directory(rt.settings.postgres.conninfo())
        try:
            return d.tenant_defaults([rt.tenant])[rt.tenant]
        finally:
            d.close()

    base = ["--config", str(rt.config), "tenants", "defaults", rt.tenant]
    # Checked against the catalog before anything is produced.
    assert main([*base, "--set", '{"categories": ["promos"]}', "--publish"]) == 2
    assert main([*base, "--set", '{"categories": ["billing"]}', "--required", "security",
                 "--publish"]) == 0  # fmt: skip
    assert defaults() == (Preferences(), ()), "published, not written: the stage writes it"
    # A record keyed for another tenant is dead-lettered, not applied.
    bad = json.dumps(
        {
            "specversion": "1.0",
            "id": "x",
            "source": "s",
            "type": "tidings.tenant.defaults",
            "data": {"tenant": rt.tenant, "required_categories": ["billing"]},
        }
    )
    rt.send([(b"someone-else/", bad.encode())])  # fmt: skip
    with rt.stage():
        wait_until(lambda: defaults()[1] == ("security",), 60, "the defaults applied")
    assert defaults() == (Preferences(categories=("billing",)), ("security",))
    dead = read_committed(rt.settings, rt.settings.topics.dlq, idle_s=2.0)
    assert [m.key() for m in dead] == [b"someone-else/"]
    pg.execute("delete from tenant_preferences where tenant = %s", (rt.tenant,))


# ------------------------------------------------------------ the directory itself


def test_a_redelivered_batch_changes_nothing_and_an_older_offset_never_wins(
    rt: Topic, pg: PG
) -> None:
    d = Directory(rt.settings.postgres.conninfo())
    v1 = rt.recipient("u1", email="v1@example.com")
    v2 = rt.recipient(
        "u1",
        email="v2@example.com",
        addresses=(Address(channel="push", address="t", platform="apns"),),
    )
    key = v1.key()
    c1, c2 = (upsert_change(v) for v in (v1, v2))
    try:
        assert d.apply([(0, 5, c1, key), (0, 10, c2, key)]) == 1  # the batch's last one counts
        stamp = pg.execute("select updated_at from recipients where tenant = %s",
                           (rt.tenant,)).fetchone()  # fmt: skip
        assert d.apply([(0, 5, c1, key), (0, 10, c2, key)]) == 0, "redelivered: nothing"
        assert d.apply([(0, 7, c1, key)]) == 0, "an older offset doesn't overwrite"
        assert d.apply([(0, 3, delete_change(rt.tenant, "u1"), key)]) == 0
        assert d.apply([(0, 9, None, key)]) == 0, "nor does an older tombstone delete"
        assert pg.execute("select updated_at from recipients where tenant = %s",
                          (rt.tenant,)).fetchone() == stamp  # fmt: skip
        assert d.lookup([(rt.tenant, "u1")]) == {(rt.tenant, "u1"): v2}
        assert stored_addresses(pg, rt.tenant) == 1
        assert d.apply([(0, 11, None, key)]) == 1, "a newer tombstone erases"
        assert d.lookup([(rt.tenant, "u1")]) == {}
        assert stored_addresses(pg, rt.tenant) == 0, "and its addresses"
    finally:
        d.close()


def test_tenant_defaults_from_the_topic_never_go_back_to_an_older_record(rt: Topic, pg: PG) -> None:
    def change(*required: str) -> RecipientChange:
        data = {"tenant": rt.tenant, "required_categories": list(required)}
        return RecipientChange(id=f"c-{required}", source="s", type=TENANT_DEFAULTS, data=data)

    def stored() -> tuple[str, ...]:
        return tuple(d.tenant_defaults([rt.tenant])[rt.tenant][1])

    key = tenant_defaults_key(rt.tenant)
    d = Directory(rt.settings.postgres.conninfo())
    try:
        assert d.apply([(0, 5, change("billing"), key), (0, 8, change("security"), key)]) == 1
        assert stored() == ("security",), "the batch's last one"
        stamp = pg.execute("select updated_at from tenant_preferences where tenant = %s",
                           (rt.tenant,)).fetchone()  # fmt: skip
        assert d.apply([(0, 8, change("security"), key)]) == 0, "redelivered: nothing"
        assert d.apply([(0, 5, change("billing"), key)]) == 0, "an older one doesn't win"
        assert d.apply([(0, 9, change("security", "security"), key)]) == 0, "the same set"
        assert pg.execute("select updated_at from tenant_preferences where tenant = %s",
                          (rt.tenant,)).fetchone() == stamp, "deliver sees no change"  # fmt: skip
        # A direct write keeps the topic position: a replay of older records can't undo it.
        d.set_tenant_defaults(rt.tenant, Preferences(), ("shipping",))
        assert d.apply([(0, 5, change("billing"), key), (0, 8, change("security"), key)]) == 0
        assert stored() == ("shipping",)
        assert d.apply([(0, 12, change("billing"), key)]) == 1, "a newer record does"
        assert stored() == ("billing",)
    finally:
        d.close()
        pg.execute("delete from tenant_preferences where tenant = %s", (rt.tenant,))


def test_lookup_reads_a_batch_with_addresses_in_order_and_tenant_defaults(rt: Topic) -> None:
    d = Directory(rt.settings.postgres.conninfo())
    addrs = tuple(Address(channel=ch, address=f"{ch}-{i}") for i, ch in
                  enumerate(["webhook", "push", "slack", "push"]))  # fmt: skip
    rs = [rt.recipient(f"u{i}", email=f"u{i}@example.com", addresses=addrs) for i in range(50)]
    try:
        d.apply([(1, i, upsert_change(r), r.key()) for i, r in enumerate(rs)])
        got = d.lookup([(rt.tenant, f"u{i}") for i in range(60)] + [(rt.tenant, "u0")])
        assert len(got) == 50 and got[(rt.tenant, "u7")] == rs[7]
        assert got[(rt.tenant, "u7")].addresses_on("push") == ["push-1", "push-3"]
        defaults = d.tenant_defaults([rt.tenant])
        assert defaults[rt.tenant] == (Preferences(), ())
    finally:
        d.close()


# ------------------------------------------------------------ kill -9 mid-stream


def _wave(
    rt: Topic, rng: random.Random, n: int, keys: int, start: int, model: dict[str, Recipient | None]
) -> list[tuple[bytes | None, bytes | None]]:
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(start, start + n):
        rid = f"k{rng.randrange(keys)}"
        roll = rng.random()
        if roll < 0.1:
            out.append(rt.delete(rid))
            model[rid] = None
        elif roll < 0.15:
            out.append(rt.tombstone(rid))
            model[rid] = None
        else:
            tokens = tuple(Address(channel="push", address=f"{rid}-{i}-{j}", platform="fcm")
                           for j in range(rng.randrange(3)))  # fmt: skip
            r = rt.recipient(rid, email=f"{rid}@example.com", attributes={"v": i},
                             addresses=tokens)  # fmt: skip
            out.append(rt.upsert(r))
            model[rid] = r
    return out


def _committed(rt: Topic) -> int:
    c = Consumer({**rt.settings.kafka.client_config(), "group.id": rt.settings.groups.recipients})
    try:
        tps = c.committed([TopicPartition(rt.topic, p) for p in range(3)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def test_kill_9_mid_stream_then_restart_ends_equal_to_the_topic(rt: Topic, pg: PG) -> None:
    rng = random.Random(14)
    model: dict[str, Recipient | None] = {}
    keys = 300
    first = _wave(rt, rng, 4000, keys, 0, model)
    rt.send(first)
    proc = rt.spawn(0)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            n = pg.execute("select count(*) from recipients where tenant = %s", (rt.tenant,))
            if n.fetchone()[0]:  # type: ignore[index]
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"the stage exited early:\n{rt.log(0)}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    done = _committed(rt)
    assert done < len(first), f"killed after it had finished ({done} committed): not mid-stream"
    rt.send(_wave(rt, rng, 2000, keys, 4000, model))
    expected = {k: r for k, r in model.items() if r is not None}
    proc = rt.spawn(1)
    try:
        ids = [f"k{i}" for i in range(keys)]
        wait_until(lambda: stored(rt, ids) == expected, 120,
                   "the directory equal to the topic's final state")  # fmt: skip
        want_addresses = sum(len(r.addresses) for r in expected.values())
        assert stored_addresses(pg, rt.tenant) == want_addresses
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nrestarted stage's log:\n{rt.log(1)}") from None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0, rt.log(1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
