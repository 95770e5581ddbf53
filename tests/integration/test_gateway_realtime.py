"""Socket.IO across two gateway processes (real ones: `tidings run --stage gateway`), Redis
between them, the real in-app processor publishing, python-socketio clients: a notification
reaches every connection of its recipient once, a read over the socket is one `read`
status and reaches the recipient's other connection, presence, and after kill -9 of one
gateway its client reconnects to the other and fetches what it missed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import yaml
from confluent_kafka.admin import AdminClient

from processors.channels.inapp import InAppProvider
from schemas.content import InAppContent
from schemas.notification import Notification, notification_id
from schemas.settings import TidingsSettings, load_settings
from schemas.status import StatusEvent
from streams.http.gateway import sign_recipient_token
from streams.runtime.kafka import ensure_topics
from streams.state import DeliveryLog, SentRecord
from streams.state.db import apply_migrations
from tests.integration.pipeline import read_committed
from tests.peers.npm import free_port

SECRET = "r" * 40


@dataclass
class Two:
    settings: TidingsSettings
    urls: list[str]
    procs: list[subprocess.Popen[bytes]]
    tenant: str
    config: Path
    ids: list[str] = field(default_factory=list)

    def token(self, rid: str) -> str:
        return sign_recipient_token(self.settings.gateway, self.tenant, rid, 600)

    def store(self, rid: str) -> Notification:
        """One in-app notification stored and published by the real InAppProvider, its send
        recorded with the dispatch record (as deliver does)."""
        u = uuid.uuid4().hex
        n = Notification(
            id=notification_id(f"urn:test:{u}", f"evt-{u}", "welcome", rid, "inapp"),
            event_id=f"evt-{u}", event_source=f"urn:test:{u}", event_type="order.created",
            tenant=self.tenant, rule_id="welcome", rule_version=1, template_id="welcome",
            template_version="1", catalog_version="c", channel="inapp", recipient=rid,
            user=rid, event_time_ms=int(time.time() * 1000),
        )  # fmt: skip
        self.ids.append(n.id)
        s = self.settings

        async def go() -> None:
            log = DeliveryLog(s.postgres.conninfo())
            p = InAppProvider(conninfo=s.postgres.conninfo(),
                              redis_url=s.redis.url.get_secret_value())  # fmt: skip
            try:
                await log.record(n.id, "inapp", SentRecord("inbox", n.id, 1),
                                 notification=n.encode())  # fmt: skip
                await p.send(n, InAppContent(title="Shipped", body="On its way", data={}))
            finally:
                await p.close()
                await log.close()

        asyncio.run(go())
        return n


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "--config", str(config), "run", "--stage", "gateway"],
        env={**os.environ}, start_new_session=True,
    )  # fmt: skip


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway exited {proc.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@pytest.fixture(scope="module")
def two(settings: TidingsSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    u = uuid.uuid4().hex[:12]
    tenant = f"rt-{u}"
    tmp = tmp_path_factory.mktemp("realtime")
    procs, urls = [], []
    status = f"test.realtime.{u}.status"
    for i in range(2):
        port = free_port()
        cfg = {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "postgres": {"host": settings.postgres.host, "port": settings.postgres.port},
            "redis": {"url": settings.redis.url.get_secret_value()},
            "topics": {"status": status},
            "gateway": {"port": port, "recipient_token_secrets": {tenant: [SECRET]}},
            "observe": {"port": 0},
        }  # fmt: skip
        path = tmp / f"gw{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        urls.append(f"http://127.0.0.1:{port}")
        procs.append(_spawn(path))
    s = load_settings(str(tmp / "gw0.yaml"))
    ensure_topics(s, {status: 1})
    apply_migrations(s.postgres.conninfo())
    world = Two(s, urls, procs, tenant, tmp / "gw0.yaml")
    try:
        for url, p in zip(urls, procs, strict=True):
            _wait_up(url, p)
        yield world
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(60)
        admin = AdminClient(s.kafka.client_config())
        for f in admin.delete_topics([status], operation_timeout=30).values():
            f.result(timeout=30)
        import psycopg

        with psycopg.connect(s.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("delete from inbox where tenant = %s", (tenant,))
            conn.execute("delete from deliveries where notification_id = any(%s::uuid[])",
                         (world.ids,))  # fmt: skip


class Client:
    """A Socket.IO client collecting what it is sent."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.got: list[dict[str, Any]] = []
        self.changed: list[dict[str, Any]] = []
        self.sio.on("notification", lambda d: self.got.append(d))
        self.sio.on("changed", lambda d: self.changed.append(d))

    async def connect(self, url: str, token: str, since: str | None = None) -> None:
        auth = {"token": token, **({"since": since} if since else {})}
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)


async def _until(ok: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_two_gateways_deliver_once_per_connection_and_receipts_cross(two: Two) -> None:
    rid = f"u-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        a, b = Client(), Client()
        await a.connect(two.urls[0], two.token(rid))
        await b.connect(two.urls[1], two.token(rid))
        await asyncio.sleep(0.3)  # both subscribed
        n = await asyncio.to_thread(two.store, rid)
        await _until(lambda: a.got and b.got, "both connections to get it")
        await asyncio.sleep(0.5)  # nothing more comes
        assert [x["id"] for x in a.got] == [n.id] and [x["id"] for x in b.got] == [n.id]
        # A read over A's socket: one read status, B hears of it (through Redis).
        answer = await a.sio.call("read", {"id": n.id}, timeout=10)
        assert answer == {"changed": [n.id]}
        assert await a.sio.call("read", {"id": n.id}, timeout=10) == {"changed": []}
        await _until(lambda: b.changed, "the other connection to hear of the read")
        assert b.changed == [{"id": n.id, "action": "read"}] and a.changed == []
        for c in (a, b):
            await c.sio.disconnect()

        evs = [StatusEvent.decode(m.value()) for m in
               read_committed(two.settings, two.settings.topics.status, idle_s=1.5)]  # fmt: skip
        mine = [e for e in evs if e.data.notification_id == n.id]
        assert [(e.data.status, e.source) for e in mine] == [
            ("seen", "tidings/gateway"),
            ("read", "tidings/gateway"),
        ], "read implies seen (the client never sent seen)"

    asyncio.run(go())


def test_a_bad_token_is_refused(two: Two) -> None:
    async def go() -> None:
        c = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await c.connect(two.urls[0], "not-a-token")

    asyncio.run(go())


def test_after_kill_9_the_client_reconnects_elsewhere_and_misses_nothing(two: Two) -> None:
    rid = f"u-{uuid.uuid4().hex[:6]}"
    key = _key(two)

    async def go() -> None:
        a = Client()
        await a.connect(two.urls[0], two.token(rid))
        await asyncio.sleep(0.3)
        online = httpx.get(f"{two.urls[1]}/v1/recipients/{rid}/presence",
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
        assert online.json() == {"online": True}, online.text
        first = await asyncio.to_thread(two.store, rid)
        await _until(lambda: a.got, "the first notification")
        since = a.got[-1]["created_at"]  # the last entry it saw: live messages carry it
        os.killpg(two.procs[0].pid, signal.SIGKILL)  # the gateway A was connected to
        two.procs[0].wait(30)
        missed = await asyncio.to_thread(two.store, rid)  # while A's client is away
        b = Client()
        await b.connect(two.urls[1], two.token(rid), since=since)
        await _until(lambda: b.got, "the catch-up")
        await asyncio.sleep(0.5)
        assert [x["id"] for x in b.got] == [missed.id], "exactly what it missed"
        assert first.id not in [x["id"] for x in b.got]
        await b.sio.disconnect()

    asyncio.run(go())


def _key(two: Two) -> str:
    import contextlib
    import io

    from streams.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(two.config), "apikeys", "create", two.tenant,
                     "--scope", "recipients:write"]) == 0  # fmt: skip
    return out.getvalue().strip()
