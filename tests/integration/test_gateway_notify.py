"""`POST /v1/notify` end to end: the real gateway, route and deliver (run_stages, threads) on
the real broker, Redis and Postgres, mail to the SMTP sink. A trigger with an
Idempotency-Key is sent once however often it is retried, even after Redis forgot the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from schemas.settings import TidingsSettings
from streams.state.idempotency import IdempotencyStore, fingerprint
from tests.integration.gateway_helpers import cli_key
from tests.integration.pipeline import World, make_world, wait_until
from tests.peers.npm import free_port

TENANT = "acme-notify"


class Api:
    def __init__(self, w: World, port: int) -> None:
        self.w = w
        self.url = f"http://127.0.0.1:{port}"
        self.prefixes: list[str] = []

    def key(self, *scopes: str) -> str:
        key = cli_key(TENANT, *scopes)
        self.prefixes.append(key.split("_")[1])
        return key

    def notify(self, key: str | None, body: Any, idem: str | None = None) -> httpx.Response:
        h = {"Authorization": f"Bearer {key}"} if key else {}
        if idem is not None:
            h["Idempotency-Key"] = idem
        return httpx.post(f"{self.url}/v1/notify", json=body, headers=h, timeout=30)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def api(settings: TidingsSettings, unique: str, tmp_path: Path) -> Iterator[Api]:
    port = free_port()
    w = make_world(settings, unique, tmp_path, extra=lambda _sink: {"gateway": {"port": port}})
    a = Api(w, port)
    try:
        with w.pipeline(("route", "deliver", "gateway")):
            wait_until(lambda: _up(a.url), 60, "the gateway to listen")
            yield a
    finally:
        w.sink.stop()
        with psycopg.connect(w.settings.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("delete from api_keys where prefix = any(%s)", (a.prefixes,))


def _problem(r: httpx.Response, status: int, pointer: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    if pointer is not None:
        assert doc.get("pointer") == pointer, doc
    return str(doc["detail"])


def _welcome(unique: str, who: str = "ann") -> dict[str, Any]:
    return {"rule": "welcome", "recipients": [f"{who}-{unique}@example.com"],
            "data": {"name": "Ann"}}  # fmt: skip


def test_a_retried_trigger_is_sent_once_even_after_redis_forgot_its_key(
    api: Api, unique: str
) -> None:
    key = api.key("events:write")
    body = _welcome(unique)
    first = api.notify(key, body, idem=f"k-{unique}")
    assert first.status_code == 202, first.text
    doc = first.json()
    assert doc["rule"] == "welcome" and doc["notifications"] == 1
    assert doc["id"].startswith("ntf_") and doc["topic"] == api.w.settings.topics.notify
    again = api.notify(key, body, idem=f"k-{unique}")
    assert again.status_code == 202 and again.json() == doc
    assert again.headers["idempotent-replayed"] == "true"
    got = api.w.wait_mail(1)
    # Redis loses the key (a flush, an eviction): the retry is produced again, as the same
    # event, and deliver's dedup sends nothing twice.
    r = redis.Redis.from_url(api.w.settings.redis.url.get_secret_value())
    name = f"tidings:idem:{TENANT}:{hashlib.sha256(f'k-{unique}'.encode()).hexdigest()}"
    assert r.delete(name) == 1
    third = api.notify(key, body, idem=f"k-{unique}")
    assert third.status_code == 202 and "idempotent-replayed" not in third.headers
    assert third.json()["id"] == doc["id"] and third.json()["offset"] != doc["offset"]
    # A trigger without a key is a new event: it is sent (and only it is new).
    other = api.notify(key, _welcome(unique, "bob"))
    assert other.status_code == 202 and other.json()["id"] != doc["id"]
    got = api.w.wait_mail(2)
    time.sleep(3)  # time for the re-produced trigger to be routed and (not) sent
    got = api.w.mail()
    assert len(got) == 2 and set(got.values()) == {1}, got


def test_the_same_key_with_another_body_is_refused(api: Api, unique: str) -> None:
    key = api.key("events:write")
    assert api.notify(key, _welcome(unique), idem=f"k2-{unique}").status_code == 202
    r = api.notify(key, _welcome(unique, "eve"), idem=f"k2-{unique}")
    assert "another body" in _problem(r, 422, "Idempotency-Key")


def test_what_cant_be_triggered_is_refused_naming_the_field(api: Api, unique: str) -> None:
    key = api.key("events:write")
    assert "has no such rule" in _problem(
        api.notify(key, {**_welcome(unique), "rule": "nope"}), 422, "/rule"
    )
    detail = _problem(api.notify(key, {**_welcome(unique), "recipients": ["+4312345678"]}), 422,
                      "/recipients")  # fmt: skip
    assert "none of the channels" in detail
    _problem(api.notify(key, {**_welcome(unique), "extra": 1}), 400, "/body/extra")
    _problem(api.notify(key, {**_welcome(unique), "recipients": "a@x.test"}), 400)
    _problem(api.notify(key, _welcome(unique), idem="a\tb"), 400, "Idempotency-Key")
    _problem(api.notify(key, _welcome(unique), idem="x" * 256), 400, "Idempotency-Key")
    _problem(api.notify(api.key("recipients:write"), _welcome(unique)), 403)
    _problem(api.notify(None, _welcome(unique)), 401)
    doc = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    op = doc["paths"]["/v1/notify"]["post"]
    assert "202" in op["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in op["parameters"])
    time.sleep(2)
    assert not api.w.mail(), "nothing refused was sent"


def test_a_template_trigger_sends_the_template_with_its_data(api: Api, unique: str) -> None:
    key = api.key("events:write")
    body = {
        "template": "welcome",
        "channels": ["email"],
        "category": "onboarding",
        "recipients": [f"tess-{unique}@example.com"],
        "data": {"name": f"Tess {unique}"},
    }
    r = api.notify(key, body)  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.json()["rule"] == "template:welcome" and r.json()["notifications"] == 1
    assert sum(api.w.wait_mail(1).values()) == 1
    (mail,) = api.w.sink.directory.glob("*.eml")
    assert f"Subject: Welcome, Tess {unique}!" in mail.read_text()
    # Refused before anything is produced, each naming its field.
    assert "no such template" in _problem(api.notify(key, {**body, "template": "nope"}), 422,
                                          "/template")  # fmt: skip
    assert "no variant for channel(s) sms" in _problem(
        api.notify(key, {**body, "channels": ["sms"]}), 422, "/channels"
    )
    assert "name" in _problem(api.notify(key, {**body, "data": {}}), 422, "/data")
    _problem(api.notify(key, {**body, "rule": "welcome"}), 400)
    _problem(api.notify(key, {k: v for k, v in body.items() if k != "category"}), 400)
    time.sleep(2)
    assert sum(api.w.mail().values()) == 1, "nothing refused was sent"


def test_the_key_store_claims_replays_and_refuses(settings: TidingsSettings) -> None:
    asyncio.run(_key_store(settings))


async def _key_store(settings: TidingsSettings) -> None:
    store = IdempotencyStore(settings.redis.url.get_secret_value(), prefix="tidings:idem-test:")
    k = f"k-{time.time_ns()}"
    fp, other = fingerprint({"a": 1, "b": 2}), fingerprint({"a": 2})
    assert fp == fingerprint({"b": 2, "a": 1}), "key order does not matter"
    try:
        assert (await store.begin("t", k, fp)).verdict == "new"
        assert (await store.begin("t", k, fp)).verdict == "in_progress"
        assert (await store.begin("t", k, other)).verdict == "mismatch"
        assert (await store.begin("u", k, fp)).verdict == "new", "keys are per tenant"
        await store.answer("t", k, fp, {"id": "x"})
        replay = await store.begin("t", k, fp)
        assert (replay.verdict, replay.answer) == ("replay", {"id": "x"})
        await store.forget("t", k)
        assert (await store.begin("t", k, fp)).verdict == "new"
    finally:
        await store.forget("t", k)
        await store.forget("u", k)
        await store.close()
    away = IdempotencyStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    try:
        assert (await away.begin("t", k, fp)).verdict == "unchecked"
        await away.answer("t", k, fp, {"id": "x"})  # logged, not raised
    finally:
        await away.close()
