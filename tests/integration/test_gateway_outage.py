"""The gateway with Postgres taken away (a TCP proxy in front of it): a key it can't check
is a 503 with Retry-After, never a 500 and never a 202 it can't stand behind; the gateway
keeps serving and answers 202 again once Postgres is back. The inbox likewise answers 503
and changes nothing."""

from __future__ import annotations

import json

import httpx
from pydantic import SecretStr

from schemas.settings import GatewaySettings, TidingsSettings
from streams.http.gateway import issue_key, sign_recipient_token
from streams.http.gateway.keystore import create_key
from streams.runtime.kafka import ensure_topics
from streams.state.db import apply_migrations
from tests.integration.pipeline import http_stage
from tests.integration.tcp_proxy import StoppableProxy
from tests.peers.npm import free_port


def test_postgres_away_is_503_then_it_serves_again(settings: TidingsSettings, unique: str) -> None:
    u = unique  # the session deletes topics named with it
    topic = f"test.gwout.{u}.order"
    proxy = StoppableProxy(settings.postgres.host, settings.postgres.port)
    proxy.up()
    port = free_port()
    s = settings.model_copy(update={
        "postgres": settings.postgres.model_copy(update={"host": "127.0.0.1", "port": proxy.port}),
        "topics": settings.topics.model_copy(update={"events": (topic,)}),
        "gateway": GatewaySettings(port=port, key_cache_s=0.0, recipient_token_secrets={
            f"t-{u}": (SecretStr("z" * 40),)}),
    })  # fmt: skip
    ensure_topics(s, {topic: 1})
    apply_migrations(settings.postgres.conninfo())
    issued = issue_key(f"t-{u}", ("events:write",))
    create_key(settings.postgres.conninfo(), issued.key)
    url = f"http://127.0.0.1:{port}"
    event = {"specversion": "1.0", "id": f"e-{u}", "type": topic, "source": "urn:x"}
    headers = {"Authorization": f"Bearer {issued.text}",
               "Content-Type": "application/cloudevents+json"}  # fmt: skip
    token = sign_recipient_token(s.gateway, f"t-{u}", "u-1", 600)
    try:
        with http_stage(s, "gateway", url):
            post = lambda: httpx.post(f"{url}/v1/events", content=json.dumps(event),  # noqa: E731
                                      headers=headers, timeout=30)  # fmt: skip
            assert post().status_code == 202
            proxy.down()
            r = post()
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/problem+json"
            inbox = httpx.get(f"{url}/v1/inbox/counts", timeout=30,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert inbox.status_code == 503, inbox.text
            proxy.up()
            assert post().status_code == 202, "back once Postgres is"
    finally:
        proxy.down()
        import psycopg

        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            conn.execute("delete from api_keys where prefix = %s", (issued.key.prefix,))
