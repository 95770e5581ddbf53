"""Twilio status callbacks end to end: signed form → callbacks stage → status event on Kafka.

Real Postgres (a `deliveries` row carrying the dispatch record, written by `DeliveryLog`), real
Kafka (a uuid status topic, read back read_committed), the stage run by `run_stages` on a free
port, requests over HTTP with httpx, signatures computed the way Twilio computes them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from processors.channels.sms import twilio_signature, with_notification_id
from schemas.notification import Notification, notification_id
from schemas.providers import ChannelsSettings, TwilioProviderSettings
from schemas.settings import CallbacksSettings, TidingsSettings
from schemas.status import StatusEvent, build_status
from streams.http.callbacks import callback_url
from streams.http.callbacks_app import MAX_BODY_BYTES, CallbackHandlers
from streams.http.callbacks_producer import AckProducer
from streams.runtime.kafka import ensure_topics
from streams.runtime.metrics import Metrics
from streams.state import DeliveryLog, SentRecord
from streams.state.db import apply_migrations
from tests.integration.pipeline import http_stage, read_committed
from tests.peers.npm import free_port

# The base URL as Twilio sees it (a proxy in front); the test talks to 127.0.0.1 directly.
PUBLIC = "https://hooks.example.test"
TOKEN = "twilio-auth-token-for-tests"


@dataclass
class Server:
    """A running callbacks stage and what it writes to."""

    settings: TidingsSettings
    local: str
    topic: str

    def notification(self, attempt: int = 1) -> Notification:
        """A recorded send: a real dispatch record in `deliveries`, as the deliver stage writes."""
        return recorded(self.settings, attempt)

    def post(
        self,
        nid: str | None,
        form: dict[str, str],
        *,
        provider: str = "twilio",
        signed_as: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST a status callback the way Twilio does: signed over the public URL."""
        public = callback_url(PUBLIC, provider)
        url = with_notification_id(public, nid) if nid is not None else public
        sig = signature or twilio_signature(TOKEN, signed_as or url, form)
        return httpx.post(
            self.local + url.removeprefix(PUBLIC),
            data=form,
            headers={"X-Twilio-Signature": sig},
            timeout=30,
        )

    def statuses(self, nid: str) -> list[Message]:
        """The committed status records keyed by `nid`."""
        return [m for m in read(self.settings, self.topic) if m.key() == nid.encode()]


def recorded(settings: TidingsSettings, attempt: int = 1) -> Notification:
    """A uuid-unique SMS notification whose send is recorded in `deliveries` with its record."""
    u = uuid.uuid4().hex
    to = "+14155552345"
    n = Notification(
        id=notification_id(f"urn:test:{u}", f"evt-{u}", "password-reset", to, "sms"),
        event_id=f"evt-{u}", event_source=f"urn:test:{u}", event_type="user.password_reset",
        tenant="acme", rule_id="password-reset", rule_version=3,
        template_id="password-reset", template_version="9f1c", catalog_version="c0ffee",
        channel="sms", recipient=to, priority="high", variables={"code": "123456"},
        attempt=attempt, event_time_ms=int(time.time() * 1000),
    )  # fmt: skip

    async def go() -> None:
        log = DeliveryLog(settings.postgres.conninfo())
        try:
            rec = SentRecord("twilio", f"SM{u}", attempt)
            await log.record(n.id, n.channel, rec, notification=n.encode())
        finally:
            await log.close()

    asyncio.run(go())
    return n


def read(settings: TidingsSettings, topic: str, idle_s: float = 2.0) -> list[Message]:
    """Every committed record of `topic`."""
    return read_committed(settings, topic, idle_s=idle_s)


def callbacks_settings(base: TidingsSettings, topic: str, port: int) -> TidingsSettings:
    twilio = TwilioProviderSettings(
        name="twilio", account_sid="AC" + "a" * 32, auth_token=SecretStr(TOKEN),
        from_number="+15005550006", status_callback_url=callback_url(PUBLIC, "twilio"),
    )  # fmt: skip
    return base.model_copy(
        update={
            "topics": base.topics.model_copy(update={"status": topic}),
            "callbacks": CallbacksSettings(host="127.0.0.1", port=port, public_url=PUBLIC),
            "channels": ChannelsSettings(sms=(twilio,)),
        }
    )


@pytest.fixture(scope="module")
def server(settings: TidingsSettings) -> Iterator[Server]:
    topic = f"test.callbacks.{uuid.uuid4().hex[:12]}.status"
    port = free_port()
    s = callbacks_settings(settings, topic, port)
    ensure_topics(s, {topic: 1})
    apply_migrations(s.postgres.conninfo())
    local = f"http://127.0.0.1:{port}"
    try:
        with http_stage(s, "callbacks", local):
            yield Server(s, local, topic)
    finally:
        admin = AdminClient(s.kafka.client_config())
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(timeout=30)


def decode(m: Message) -> StatusEvent:
    return StatusEvent.decode(m.value() or b"")


def test_delivered_emits_one_complete_status_event(server: Server) -> None:
    n = server.notification(attempt=2)
    form = {"MessageSid": "SMdelivered1", "MessageStatus": "delivered", "AccountSid": "AC1"}
    resp = server.post(n.id, form)
    assert resp.status_code == 200, resp.text
    [m] = server.statuses(n.id)
    ev = decode(m)
    expected = build_status(
        n, "delivered", stage="callbacks", attempt=2, provider="twilio",
        provider_message_id="SMdelivered1", now=ev.time,
    )  # fmt: skip
    assert ev == expected
    assert ev.source == "tidings/callbacks"
    assert ev.data.provider_message_id == "SMdelivered1"
    assert dict(m.headers() or []) == {k: v for k, v in expected.headers()}
    assert ev.id in resp.text


def test_undelivered_emits_failed_with_twilios_code(server: Server) -> None:
    n = server.notification()
    form = {"MessageSid": "SMundelivered", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert server.post(n.id, form).status_code == 200
    [m] = server.statuses(n.id)
    ev = decode(m)
    assert ev.type == "notification.failed"
    assert ev.data.error is not None
    assert ev.data.error.code == "twilio_30003"
    assert ev.data.provider_message_id == "SMundelivered"
    assert ev.data.rule_id == n.rule_id and ev.data.tenant == "acme"


def test_bad_signatures_are_refused_and_emit_nothing(server: Server) -> None:
    n = server.notification()
    form = {"MessageSid": "SMforged", "MessageStatus": "delivered"}
    forged = server.post(n.id, form, signature="Zm9yZ2VkIHNpZ25hdHVyZQ==")
    assert forged.status_code == 403
    assert "X-Twilio-Signature" in forged.text
    # Signed over the URL the server sees (not the public one Twilio calls): refused too.
    local = f"{server.local}/callbacks/twilio/twilio?nid={n.id}"
    assert server.post(n.id, form, signed_as=local).status_code == 403
    tampered = twilio_signature(TOKEN, with_notification_id(callback_url(PUBLIC, "twilio"), n.id),
                                {**form, "MessageStatus": "failed"})  # fmt: skip
    assert server.post(n.id, form, signature=tampered).status_code == 403
    assert server.statuses(n.id) == []


def test_intermediate_status_is_204_and_emits_nothing(server: Server) -> None:
    n = server.notification()
    for status in ("queued", "sent"):
        resp = server.post(n.id, {"MessageSid": "SMsent", "MessageStatus": status})
        assert resp.status_code == 204, resp.text
    assert server.statuses(n.id) == []


def test_repeated_callback_gives_the_same_status_id(server: Server) -> None:
    n = server.notification()
    form = {"MessageSid": "SMtwice", "MessageStatus": "delivered"}
    assert server.post(n.id, form).status_code == 200
    assert server.post(n.id, form).status_code == 200
    got = server.statuses(n.id)
    assert len(got) == 2
    assert decode(got[0]).id == decode(got[1]).id


def test_unknown_provider_missing_or_unknown_nid(server: Server) -> None:
    n = server.notification()
    form = {"MessageSid": "SMx", "MessageStatus": "delivered"}
    unknown = server.post(n.id, form, provider="nobody")
    assert unknown.status_code == 404
    assert "channels.sms" in unknown.text
    # Not correlatable: answered 200 (logged) so Twilio doesn't keep retrying.
    no_nid = server.post(None, form)
    assert no_nid.status_code == 200 and "ignored" in no_nid.text
    stranger = str(uuid.uuid4())
    unknown_nid = server.post(stranger, form)
    assert unknown_nid.status_code == 200 and "no send recorded" in unknown_nid.text
    assert server.statuses(n.id) == [] and server.statuses(stranger) == []


def test_oversized_or_non_form_bodies_are_refused(server: Server) -> None:
    url = f"{server.local}/callbacks/twilio/twilio"
    big = httpx.post(url, data={"Body": "x" * (MAX_BODY_BYTES + 1)}, timeout=30)
    assert big.status_code == 413
    as_json = httpx.post(url, json={"MessageStatus": "delivered"}, timeout=30)
    assert as_json.status_code == 415


def test_kafka_down_answers_503(settings: TidingsSettings) -> None:
    """No acknowledgement from Kafka → 503, so the caller may retry; nothing claims success."""
    dead = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(
            update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})}
    )  # fmt: skip
    port = free_port()
    s = callbacks_settings(dead, "test.callbacks.unreachable", port)
    apply_migrations(s.postgres.conninfo())
    nid = recorded(s).id

    async def go() -> httpx.Response:
        deliveries = DeliveryLog(s.postgres.conninfo())
        producer = AckProducer(s, ack_timeout_s=1.0)
        await producer.start()
        app = CallbackHandlers(s, deliveries, producer, Metrics()).app()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_config=None, lifespan="off"))  # fmt: skip
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                assert not serving.done(), "the server did not start"
                await asyncio.sleep(0.05)
            url = with_notification_id(callback_url(PUBLIC, "twilio"), nid)
            form = {"MessageSid": "SMdown", "MessageStatus": "delivered"}
            async with httpx.AsyncClient(timeout=30) as client:
                return await client.post(
                    f"http://127.0.0.1:{port}" + url.removeprefix(PUBLIC),
                    data=form,
                    headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, form)},
                )
        finally:
            server.should_exit = True
            await serving
            await producer.close(timeout_s=1.0)
            await deliveries.close()

    resp = asyncio.run(go())
    assert resp.status_code == 503, resp.text
    assert "Kafka" in resp.text
