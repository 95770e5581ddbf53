"""Realistic sample events for `tidings demo`, `make run` and tests (deterministic from a seed),
and `produce_demo`, which puts them on Kafka."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, cast

from schemas.recipient import Preferences, Recipient
from schemas.settings import TidingsSettings
from streams.runtime.kafka import make_producer

__all__ = [
    "DEMO_USER_IDS",
    "Mode",
    "cloudevent",
    "demo_recipients",
    "encode",
    "produce_demo",
    "sample_event",
]

# The demo directory: `make run` loads these recipients (tidings dev).
DEMO_USER_IDS = tuple(f"demo-{i:02d}" for i in range(1, 13))


def demo_recipients() -> list[Recipient]:
    """The demo's directory: a dozen users in the demo's tenants, with email addresses; two
    opted out of onboarding mail, one marked internal (the rule's recipient_when skips it),
    one German-speaking."""
    out = []
    for i, rid in enumerate(DEMO_USER_IDS):
        first = _FIRST[i % len(_FIRST)]
        prefs = Preferences(categories=("onboarding",)) if i in (3, 7) else Preferences()
        out.append(
            Recipient(
                tenant=("acme", "globex", "initech")[i % 3], id=rid,
                email=f"{first.lower()}.{rid}@example.com",
                locale="de-AT" if i == 5 else "en", timezone="Europe/Vienna",
                attributes={"first_name": first, "plan": "internal" if i == 9 else "pro"},
                preferences=prefs,
            )
        )  # fmt: skip
    return out


Mode = Literal["structured", "binary", "bare"]

_FIRST = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Alan",
    "Radia",
]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen"]
_ITEMS = [
    ("Mechanical keyboard", 89.0), ("USB-C cable", 9.5), ("27\" monitor", 249.0),
    ("Desk lamp", 34.9), ("Notebook", 4.2), ("Headphones", 129.0), ("Webcam", 59.0),
]  # fmt: skip


def cloudevent(
    etype: str, data: Any, *, source: str = "urn:tidings:demo", tenant: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A CloudEvents 1.0 structured-mode document."""
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "type": etype,
        "source": source,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
    if tenant:
        doc["tenantid"] = tenant
    return doc


def encode(doc: dict[str, Any], mode: Mode) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Kafka value and headers for a CloudEvent in `mode` (bare keeps only the data)."""
    if mode == "structured":
        return json.dumps(doc).encode(), [("content-type", b"application/cloudevents+json")]
    if mode == "binary":
        headers = [
            (f"ce_{k}", str(v).encode())
            for k, v in doc.items()
            if k not in ("data", "datacontenttype")
        ]
        headers.append(("content-type", b"application/json"))
        return json.dumps(doc["data"]).encode(), headers
    return json.dumps(doc["data"]).encode(), []


def sample_event(rng: random.Random, etype: str | None = None) -> dict[str, Any]:
    """One realistic order.created or user.registered CloudEvent."""
    etype = etype or rng.choice(["order.created", "user.registered"])
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = f"{first}.{last}.{rng.randrange(10_000)}@example.com".lower()
    tenant = rng.choice(["acme", "globex", "initech"])
    eid = str(uuid.UUID(int=rng.getrandbits(128)))
    if etype == "order.created":
        picked = [
            (name, rng.randint(1, 3), price)
            for name, price in rng.sample(_ITEMS, rng.randint(1, 3))
        ]
        items = [{"name": name, "quantity": q, "price": price} for name, q, price in picked]
        total = round(sum(q * price for _, q, price in picked), 2)
        data: dict[str, Any] = {
            "order_id": f"ORD-{rng.randrange(10**8):08d}",
            "customer": {"name": f"{first} {last}", "email": email},
            "items": items,
            "total": total,
            "currency": "EUR",
        }
    else:
        # Half of the demo's users are in the demo directory (`demo_recipients`): the
        # directory rule (examples/catalog/rules/directory.yaml) reaches them; the others
        # come out `suppressed` (no-address).
        uid = rng.choice(DEMO_USER_IDS) if rng.random() < 0.5 else f"u-{rng.randrange(10**6)}"
        data = {"user_id": uid, "name": first, "email": email}
    return cloudevent(etype, data, tenant=tenant, event_id=eid)


def produce_demo(
    s: TidingsSettings,
    count: int,
    rate: float,
    seed: int,
    invalid_every: int,
    stop: threading.Event | None = None,
) -> int:
    """Produce `count` demo events at `rate`/s (0 = unthrottled); returns how many. Blocks."""
    rng = random.Random(seed)
    p = make_producer(s)
    modes = ("structured", "structured", "binary", "bare")
    sent = 0
    start = time.monotonic()
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        doc = sample_event(rng)
        headers: list[tuple[str, bytes]] = []
        if invalid_every and i % invalid_every == invalid_every - 1:
            value = b'{"this is": not json'  # shows the DLQ at work
        else:
            value, headers = encode(doc, cast(Any, modes[i % len(modes)]))
        p.produce(doc["type"], value=value, headers=cast(Any, headers))
        p.poll(0)
        sent += 1
        if rate > 0:
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    p.flush(30)
    return sent
