"""The benchmark workload, deterministic from a seed: a 50-rule catalog and 0.5-2 KB events.

Ten event types, five rules each (so 50 rules). The rule conditions are tuned so that a valid
event makes about two notifications on average; `mean_notifications` measures it with the real
catalog. The channel mix is chosen per catalog (`MIXES`): every rule on email, on webhook (the
recipient is a URL on the bench's HTTP peer, one per customer so deliver's per-recipient order
doesn't serialise the sends), on in-app (a user id per customer), or `mixed`: notify and
regional on email, vip and marketing in-app, manager on webhook.
5% of the events are invalid in one of several ways (not JSON, missing attributes,
wrong specversion, binary mode without an id), and end in the DLQ.

Events are built from a pool of distinct documents serialized once with a placeholder
id; `EventPool.record(i)` swaps in a unique id, so producing millions is cheap.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EVENT_TYPES",
    "MIXES",
    "EventPool",
    "Record",
    "channel_shares",
    "matches",
    "mean_notifications",
    "write_catalog",
]

EVENT_TYPES: tuple[str, ...] = (
    "order.created",
    "order.shipped",
    "order.cancelled",
    "payment.succeeded",
    "payment.failed",
    "user.registered",
    "user.password_reset",
    "invoice.issued",
    "subscription.renewed",
    "cart.abandoned",
)
INVALID_RATE = 0.05
BINARY_RATE = 0.2
_PLACEHOLDER = "@@EVENT-ID-PLACEHOLDER@@"
_PH = _PLACEHOLDER.encode()
_FIRST = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Radia"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen"]
_PRODUCTS = [
    "Mechanical keyboard",
    "USB-C cable",
    "27-inch monitor",
    "Desk lamp",
    "Notebook",
    "Headphones",
    "Webcam",
    "Standing desk",
    "Office chair",
    "Laptop stand",
    "Mouse pad",
]
_TIERS = (["bronze"] * 4) + (["silver"] * 3) + (["gold"] * 2) + ["platinum"]  # gold+ = 30%
_REGIONS = (["eu"] * 2) + (["us"] * 5) + (["apac"] * 3)  # eu = 20%
_LOCALES = ["en", "de-AT", "fr", "en-GB"]

# Five rule shapes per event type; expected notifications per valid event ~ 1 + .3 + .3 + .2 + .2.
# (name, condition, who: "customer" or "manager")
_RULES: tuple[tuple[str, str, str], ...] = (
    ("notify", "event.data.amount >= 0.0", "customer"),
    (
        "vip",
        "event.data.customer.tier == 'gold' || event.data.customer.tier == 'platinum'",
        "customer",
    ),
    ("manager", "event.data.amount > 700.0", "manager"),
    ("regional", "event.data.region == 'eu'", "customer"),
    (
        "marketing",
        "event.data.?flags.marketing.orValue(false) && event.data.customer.tier != 'none'",
        "customer",
    ),
)
MIXES: tuple[str, ...] = ("email", "webhook", "inapp", "mixed")
_MIXED = {"notify": "email", "vip": "inapp", "manager": "webhook", "regional": "email",
          "marketing": "inapp"}  # fmt: skip
_VARIABLES = {
    "name": "event.data.customer.?name.orValue('there')",
    "amount": "event.data.amount",
    "currency": "event.data.?currency.orValue('EUR')",
    "items": "event.data.items",
    "ref": "event.data.ref",
}


def _channel(mix: str, rule: str) -> str:
    return _MIXED[rule] if mix == "mixed" else mix


def _recipient(channel: str, who: str, rule: str, webhook_base: str) -> dict[str, str] | str:
    """The declared recipient of a rule shape on `channel` (a CEL expression)."""
    if channel == "email":
        expr = {
            "customer": "event.data.customer.email",
            "manager": "event.data.account.manager_email",
        }
        if rule == "regional":
            return {"email": "event.data.customer.email.lowerAscii()"}
        return {"email": expr[who]}
    key = "event.data.customer.id" if who == "customer" else "event.data.account.id"
    if channel == "webhook":
        return {"url": f"'{webhook_base.rstrip('/')}/hooks/' + {key}"}
    # The inbox id as the address itself (a plain expression), not `user:`: these rows
    # measure delivery, not the recipient directory (which `user:` would consult per batch).
    return f"'u-' + {key}"


def write_catalog(root: Path, mix: str = "email", webhook_base: str = "http://127.0.0.1:9") -> Path:
    """Write the 50-rule catalog of channel mix `mix` (one of MIXES) to `root`; returns `root`.

    Webhook recipients are URLs under `webhook_base` (the bench's HTTP peer). Every template
    has the variant of each channel the mix uses.
    """
    if mix not in MIXES:
        raise ValueError(f"unknown channel mix {mix!r}: use one of {', '.join(MIXES)}")
    rules: list[dict[str, Any]] = []
    for etype in EVENT_TYPES:
        tid = etype.replace(".", "-").replace("_", "-")
        for name, when, who in _RULES:
            channel = _channel(mix, name)
            rules.append(
                {
                    "id": f"{tid}-{name}",
                    "version": 1,
                    "description": f"{name} notification for {etype}",
                    "events": [etype],
                    "when": when,
                    "recipients": [_recipient(channel, who, name, webhook_base)],
                    "channels": [channel],
                    "template": tid,
                    "priority": "high" if name == "manager" else "normal",
                    "category": "marketing" if name == "marketing" else "transactional",
                    "variables": dict(_VARIABLES),
                }
            )
        title = etype.replace(".", " ").replace("_", " ")
        for channel in {_channel(mix, name) for name, _, _ in _RULES}:
            tdir = root / "templates" / tid / channel
            tdir.mkdir(parents=True, exist_ok=True)
            for part, text in _TEMPLATES[channel](title).items():
                (tdir / part).write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    (root / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}, sort_keys=False))
    return root


def _email(title: str) -> dict[str, str]:
    return {
        "subject.txt.j2": f"{title.capitalize()}: {{{{ ref }}}}\n",
        "body.txt.j2": (
            f"Hello {{{{ name }}}},\n\nThis is about your {title} ({{{{ ref }}}}).\n"
            "{% for it in items %}- {{ it.quantity }} x {{ it.name }} at "
            "{{ '%.2f' | format(it.price) }}\n{% endfor %}"
            "Total: {{ '%.2f' | format(amount) }} {{ currency }}\n"
        ),
        "body.html.j2": (
            f"<html><body><p>Hello {{{{ name }}}},</p><p>Your {title} ({{{{ ref }}}}).</p><ul>"
            "{% for it in items %}<li>{{ it.quantity }} x {{ it.name }}</li>{% endfor %}</ul>"
            "<p>Total: {{ '%.2f' | format(amount) }} {{ currency }}</p></body></html>\n"
        ),
    }


def _webhook(title: str) -> dict[str, str]:
    return {
        "body.json.j2": (
            f'{{"event": {json.dumps(title)}, "ref": {{{{ ref | tojson }}}}, '
            '"name": {{ name | tojson }}, "amount": {{ amount | tojson }}, '
            '"currency": {{ currency | tojson }}, "items": {{ items | tojson }}}\n'
        )
    }


def _inapp(title: str) -> dict[str, str]:
    return {
        "title.txt.j2": f"{title.capitalize()}: {{{{ ref }}}}\n",
        "body.txt.j2": (
            f"Hello {{{{ name }}}}, your {title} ({{{{ ref }}}}): "
            "{{ '%.2f' | format(amount) }} {{ currency }}.\n"
        ),
        "data.json.j2": '{"ref": {{ ref | tojson }}, "amount": {{ amount | tojson }}}\n',
    }


_TEMPLATES = {"email": _email, "webhook": _webhook, "inapp": _inapp}


def _data(rng: random.Random, etype: str, size: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    n = rng.randrange(100_000)
    items = [
        {
            "sku": f"SKU-{rng.randrange(10**6):06d}",
            "name": rng.choice(_PRODUCTS),
            "quantity": rng.randint(1, 4),
            "price": round(rng.uniform(3, 400), 2),
        }
        for _ in range(rng.randint(1, 3))
    ]
    data: dict[str, Any] = {
        "ref": f"{etype.split('.')[0][:3].upper()}-{rng.randrange(10**8):08d}",
        "customer": {
            "id": f"c-{n}",
            "name": f"{first} {last}",
            "email": f"{first}.{last}.{n}@example.com".lower(),
            "tier": rng.choice(_TIERS),
            "locale": rng.choice(_LOCALES),
        },
        "account": {"id": f"a-{n % 997}", "manager_email": f"manager.{n % 97}@example.com"},
        "region": rng.choice(_REGIONS),
        "flags": {"marketing": rng.random() < 0.2, "beta": rng.random() < 0.5},
        "items": items,
        "amount": round(rng.uniform(0, 1000), 2),  # > 700: 30%
        "currency": rng.choice(["EUR", "USD", "GBP"]),
    }
    # Pad to the target size with a realistic free-text field.
    base = len(json.dumps(data))
    if size > base + 20:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size - base - 12:
            words.append(rng.choice(_PRODUCTS).lower())
        data["note"] = " ".join(words)
    return data


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce."""

    topic_index: int  # index into EVENT_TYPES: which topic it goes to
    value: bytes
    headers: list[tuple[str, bytes]]
    valid: bool


class EventPool:
    """`size` distinct pre-serialized events; `record(i, prefix)` gives event i with a unique id."""

    def __init__(self, seed: int, size: int = 4096) -> None:
        rng = random.Random(seed)
        self._items: list[tuple[int, bytes, list[tuple[str, bytes]], bool, bool]] = []
        time = datetime(2026, 1, 1, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        for k in range(size):
            ti = rng.randrange(len(EVENT_TYPES))
            etype = EVENT_TYPES[ti]
            data = _data(rng, etype, rng.randint(500, 2000) - 260)  # ~260 B of envelope
            doc: dict[str, Any] = {
                "specversion": "1.0",
                "id": _PLACEHOLDER,
                "type": etype,
                "source": "urn:tidings:bench",
                "time": time,
                "datacontenttype": "application/json",
                "tenantid": rng.choice(["acme", "globex", "initech"]),
                "data": data,
            }
            invalid = rng.random() < INVALID_RATE
            binary = rng.random() < BINARY_RATE
            if invalid:
                kind = k % 4
                if kind == 0:
                    value = json.dumps(doc).encode()[: rng.randint(50, 400)]  # truncated JSON
                    self._items.append((ti, value, [], False, False))
                    continue
                if kind == 1:
                    del doc["source"]
                elif kind == 2:
                    doc["specversion"] = "0.3"
                else:
                    hdrs = [
                        ("ce_specversion", b"1.0"),
                        ("ce_type", etype.encode()),
                        ("ce_source", b"urn:tidings:bench"),
                        ("content-type", b"application/json"),
                    ]
                    self._items.append((ti, json.dumps(data).encode(), hdrs, False, False))
                    continue
                self._items.append((ti, json.dumps(doc).encode(), [], False, True))
                continue
            if binary:
                hdrs = [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", _PH),
                    ("ce_type", etype.encode()),
                    ("ce_source", b"urn:tidings:bench"),
                    ("ce_time", time.encode()),
                    ("ce_tenantid", doc["tenantid"].encode()),
                    ("content-type", b"application/json"),
                ]
                self._items.append((ti, json.dumps(data).encode(), hdrs, True, False))
            else:
                hdrs = [("content-type", b"application/cloudevents+json")]
                self._items.append((ti, json.dumps(doc).encode(), hdrs, True, True))

    def __len__(self) -> int:
        return len(self._items)

    def record(self, i: int, prefix: str) -> Record:
        """Event number `i` of the stream, with id `<prefix>-<i>`; pure and cheap."""
        ti, value, headers, valid, id_in_body = self._items[i % len(self._items)]
        eid = f"{prefix}-{i}".encode()
        if id_in_body:
            value = value.replace(_PH, eid, 1)
        elif valid:
            headers = [(k, eid if v is _PH else v) for k, v in headers]
        return Record(ti, value, headers, valid)

    def sizes(self) -> list[int]:
        """Byte size (value + headers) of every valid pooled event, for the report."""
        return [
            len(v) + sum(len(k) + len(h) for k, h in hs)
            for _, v, hs, valid, _ in self._items
            if valid
        ]

    def invalid_share(self) -> float:
        """The share of invalid events in the pool."""
        return sum(1 for it in self._items if not it[3]) / len(self._items)


def matches(pool: EventPool, catalog: Any, records: int) -> Iterator[list[Any]]:
    """The catalog's matches for each *valid* one of the pool's first `records` records
    (wrapping around the pool), decoded as route decodes them: one list per event."""
    from schemas.envelope import Origin, decode_event

    now = datetime.now(UTC)
    for i in range(records):
        r = pool.record(i % len(pool), "probe")
        if r.valid:
            env = decode_event(r.value, r.headers, Origin(topic="t", partition=0, offset=i))
            yield catalog.evaluate(env.as_cel(), now)


def channel_shares(pool: EventPool, catalog_dir: Path, sample: int = 2000) -> dict[str, float]:
    """Average notifications per *valid* event, by channel, with the real catalog and decoder."""
    from catalog import load_catalog

    totals: dict[str, int] = {}
    valid = 0
    for found in matches(pool, load_catalog(catalog_dir), min(sample, len(pool))):
        for m in found:
            totals[m.channel] = totals.get(m.channel, 0) + 1
        valid += 1
    return {ch: n / max(valid, 1) for ch, n in sorted(totals.items())}


def mean_notifications(pool: EventPool, catalog_dir: Path, sample: int = 2000) -> float:
    """Average notifications per *valid* event (every channel), as `channel_shares` counts them."""
    return sum(channel_shares(pool, catalog_dir, sample).values())
