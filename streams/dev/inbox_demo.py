"""`make run`'s live inbox: the gateway on, a payment every few seconds for one demo user.

`with_gateway(settings)` turns the gateway stage on (a per-run recipient-token secret for
the demo tenant unless one is configured) and adds `payment.completed` (the example
catalog's rule to email + in-app) to the domain topics; `produce_payments` sends one
payment for `DEMO_INBOX_USER` every `every_s` until stopped, so its web inbox fills live.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid

from pydantic import SecretStr

from schemas.settings import TidingsSettings
from streams.dev.demo import DEMO_USER_IDS, cloudevent
from streams.http.gateway.tokens import sign_recipient_token
from streams.runtime.kafka import make_producer

__all__ = ["DEMO_INBOX_TENANT", "DEMO_INBOX_USER", "inbox_url", "produce_payments", "with_gateway"]

DEMO_INBOX_TENANT, DEMO_INBOX_USER = "acme", DEMO_USER_IDS[0]  # demo-01 is acme's
PAYMENTS = "payment.completed"


def with_gateway(s: TidingsSettings) -> TidingsSettings:
    """`s` with the gateway enabled for the demo (module docstring)."""
    secrets_ = dict(s.gateway.recipient_token_secrets)
    secrets_.setdefault(DEMO_INBOX_TENANT, (SecretStr(secrets.token_urlsafe(32)),))
    gateway = s.gateway.model_copy(update={"enabled": True, "recipient_token_secrets": secrets_})
    events = s.topics.events if PAYMENTS in s.topics.events else (*s.topics.events, PAYMENTS)
    return s.model_copy(
        update={"gateway": gateway, "topics": s.topics.model_copy(update={"events": events})}
    )


def inbox_url(s: TidingsSettings, ttl_s: int = 12 * 3600) -> str:
    """The web inbox of the demo user, with a token valid `ttl_s` seconds."""
    token = sign_recipient_token(s.gateway, DEMO_INBOX_TENANT, DEMO_INBOX_USER, ttl_s)
    return f"http://{s.gateway.host}:{s.gateway.port}/inbox#token={token}"


def produce_payments(s: TidingsSettings, stop: threading.Event, every_s: float = 5.0) -> int:
    """One payment.completed for the demo user every `every_s` until `stop`; returns how
    many. Blocks."""
    p = make_producer(s)
    n = 0
    while not stop.wait(every_s if n else 1.0):
        n += 1
        doc = cloudevent(PAYMENTS, {
            "payment_id": f"pay-{uuid.uuid4().hex[:8]}", "amount": f"{10 + n % 90}.00",
            "currency": "EUR", "customer": {"user_id": DEMO_INBOX_USER},
        }, tenant=DEMO_INBOX_TENANT)  # fmt: skip
        p.produce(PAYMENTS, value=json.dumps(doc).encode(), key=DEMO_INBOX_USER.encode(),
                  headers=[("content-type", b"application/cloudevents+json")])  # fmt: skip
        p.poll(0)
    p.flush(10)
    return n
