"""One scenario's world on the private stack: uuid topics and groups, a catalog copy, the
peers (two SMTP sinks, a signed-webhook endpoint, two FCM peers), a config file for the tidings
processes, the event mix, and the readers that become the history.

Events: 70% `order.created` (email), 20% `order.shipped` (push, FCM), 10% critical
`infra.alert.database` (signed webhook); each to its own recipient, half structured and half
binary CloudEvents; one in `poison_every` replaced by records that must be dead-lettered.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import psycopg
import yaml

from schemas.notification import notification_id
from schemas.settings import RuntimeSettings, TidingsSettings, load_settings
from streams.dev.demo import cloudevent, encode
from streams.runtime.kafka import ensure_topics, pipeline_topics
from streams.state.db import apply_migrations
from tests.chaos.history import Expected, History, Status, takeovers_in
from tests.chaos.peers import FcmChaosPeer, SmtpPeer, WebhookPeer
from tests.chaos.stack import ROOT, Stack
from tests.chaos.traffic import Reader, poison_shape, status_of
from tests.peers.fcm import make_key
from tests.peers.npm import free_port

__all__ = ["AMBIGUITY", "ChaosWorld"]

LOCAL_HTTP: dict[str, Any] = {"allow": ["127.0.0.1/32"], "allow_http": True}
FCM_EMAIL = "tidings@chaos-project.iam.gserviceaccount.com"
TWILIO_TOKEN = "chaos-twilio-token"
# A duplicate push is worse than a miss here: exercises both policies.
AMBIGUITY = {"email": "resend", "webhook": "resend", "push": "skip"}


class ChaosWorld:
    """Everything one scenario owns; `close()` stops the peers and readers."""

    def __init__(self, stack: Stack, tmp: Path, unique: str, *, callbacks: bool = False,
                 poison_every: int = 0, smtp_delay_s: float = 0.01) -> None:  # fmt: skip
        self.tmp, self.unique, self.poison_every = tmp, unique, poison_every
        self.source = f"urn:chaos:{unique}"
        self.rng = random.Random(unique)
        self.tokens: dict[str, str] = {}
        self.smtp = [SmtpPeer("smtp-a", tmp / "mail-a", smtp_delay_s),
                     SmtpPeer("smtp-b", tmp / "mail-b", smtp_delay_s)]  # fmt: skip
        self.secret = "whsec_" + base64.b64encode(self.rng.randbytes(32)).decode()
        self.webhook = WebhookPeer(self.secret)
        self.webhook.__enter__()
        private, public = make_key()
        self.fcm = [FcmChaosPeer(n, public, FCM_EMAIL, self.tokens) for n in ("fcm-a", "fcm-b")]
        for peer in self.fcm:
            peer.__enter__()
        self.callbacks_port = free_port() if callbacks else None
        self.config = self._write_config(stack, private)
        self.settings: TidingsSettings = load_settings(str(self.config))
        ensure_topics(self.settings, pipeline_topics(self.settings))
        apply_migrations(self.settings.postgres.conninfo())
        kafka = self.settings.kafka.client_config()
        topics = pipeline_topics(self.settings)
        status, dlq = self.settings.topics.status, self.settings.topics.dlq
        self.statuses = Reader(kafka, status, topics[status], status_of)
        self.dlq = Reader(kafka, dlq, topics[dlq], _origin)

    # ------------------------------------------------------------ configuration

    def _write_config(self, stack: Stack, private_pem: str) -> Path:
        u, tmp = self.unique, self.tmp
        cat = tmp / "catalog"
        shutil.copytree(ROOT / "examples/catalog", cat)
        # These events address people directly; the directory's rules have their own tests.
        (cat / "rules/directory.yaml").unlink()
        # order.shipped's push goes to the user id as its device token, as the traffic's
        # expectations say: the rule's `- user:` (a directory lookup) becomes a plain address.
        orders = cat / "rules/orders.yaml"
        declared, plain = '- user: "event.data.customer.user_id"', '- "event.data.customer.user_id"'
        orders.write_text(orders.read_text().replace(declared, plain))
        infra = cat / "rules/infra.yaml"  # the webhook rule only: no Slack peer here
        doc = yaml.safe_load(infra.read_text())
        doc["rules"] = [r for r in doc["rules"] if r["id"] == "infra-alert-webhook"]
        infra.write_text(yaml.safe_dump(doc))
        fcm = []
        for peer in self.fcm:
            key = tmp / f"{peer.name}.json"
            key.write_text(
                json.dumps(
                    {
                        "type": "service_account",
                        "project_id": "chaos",
                        "private_key_id": "k1",
                        "private_key": private_pem,
                        "client_email": FCM_EMAIL,
                        "token_uri": peer.token_uri,
                    }
                )
            )
            fcm.append({"kind": "fcm", "name": peer.name, "service_account_file": str(key),
                        "base_url": peer.url, "http": LOCAL_HTTP})  # fmt: skip
        channels: dict[str, Any] = {
            "email": [{"kind": "smtp", "name": p.name, "host": "127.0.0.1", "port": p.port}
                      for p in self.smtp],
            "push": fcm,
            "webhook": [{"kind": "webhook", "name": "hooks", "secrets": [self.secret],
                         "http": LOCAL_HTTP}],
        }  # fmt: skip
        runtime: dict[str, Any] = {"drain_timeout_s": 15.0}
        if "ambiguity" in RuntimeSettings.model_fields:
            runtime["ambiguity"] = AMBIGUITY
        # CHAOS_RUNTIME='{"static_membership": true}': try a runtime setting under the faults.
        runtime.update(json.loads(os.environ.get("CHAOS_RUNTIME") or "{}"))
        cfg: dict[str, Any] = {
            "kafka": {"bootstrap_servers": stack.bootstrap},
            "postgres": {"host": "127.0.0.1", "port": stack.pg_port},
            "redis": {"url": stack.redis_url},
            "topics": {"events": [f"chaos.{u}.events"], "dispatch_prefix": f"chaos.{u}.dispatch.",
                       "status": f"chaos.{u}.status", "dlq": f"chaos.{u}.dlq",
                       "retry_prefix": f"chaos.{u}.retry.", "partitions": 3,
                       "status_partitions": 3},
            "groups": {"route": f"route-{u}", "deliver": f"deliver-{u}", "audit": f"audit-{u}"},
            "smtp": {"port": self.smtp[0].port},
            "catalog": {"path": str(cat), "watch_interval_s": 0},
            "channels": channels,
            "runtime": runtime,
            # Many stage processes at once: each serves /metrics on a free port.
            "observe": {"port": 0},
        }  # fmt: skip
        if self.callbacks_port:
            base = f"http://127.0.0.1:{self.callbacks_port}"
            cfg["callbacks"] = {
                "enabled": True,
                "host": "127.0.0.1",
                "port": self.callbacks_port,
                "public_url": base,
            }
            channels["sms"] = [{"kind": "twilio", "name": "twilio", "account_sid": "AC" + "c" * 32,
                                "auth_token": TWILIO_TOKEN, "from_number": "+15005550006",
                                "status_callback_url": f"{base}/callbacks/twilio/twilio",
                                "base_url": "http://127.0.0.1:9", "http": LOCAL_HTTP}]  # fmt: skip
        path = tmp / "tidings.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    # ------------------------------------------------------------ events

    def make(self, i: int) -> tuple[str, bytes | None, list[tuple[str, bytes]],
                                    Expected | None, str | None]:  # fmt: skip
        """Record `i` of the mix: (topic, value, headers, expected notification, poison shape)."""
        topic = self.settings.topics.events[0]
        if self.poison_every and i % self.poison_every == self.poison_every // 2:
            shape, value = poison_shape(self.rng, i // self.poison_every, self.source)
            return topic, value, [], None, shape
        u, kind = self.unique, i % 10
        eid = f"evt-{u}-{i}"
        if kind < 7:
            to = f"c{i}.{u}@example.com"
            doc = cloudevent("order.created", {
                "order_id": f"ORD-{u}-{i}", "customer": {"name": f"C {i}", "email": to},
                "items": [{"name": "Widget", "quantity": 1, "price": 9.5}], "total": 9.5,
                "currency": "EUR"}, source=self.source, event_id=eid, tenant="acme")  # fmt: skip
            rule, channel = "order-confirmation", "email"
        elif kind < 9:
            to = f"u-{u}-{i}"
            doc = cloudevent("order.shipped", {
                "order_id": f"SHP-{u}-{i}", "packages": 1, "carrier": "DHL",
                "tracking_url": f"https://track.example/{i}", "eta": "2026-01-08T12:00:00Z",
                "customer": {"user_id": to, "name": f"U {i}"}}, source=self.source,
                event_id=eid)  # fmt: skip
            rule, channel = "order-shipped", "push"
        else:
            to = f"{self.webhook.url}/hooks/{i}"
            doc = cloudevent("infra.alert.database", {
                "alert_id": f"ALRT-{u}-{i}", "service": "orders-db", "severity": "critical",
                "summary": "chaos", "runbook": "https://runbooks.example.com/x",
                "pager_url": to}, source=self.source, event_id=eid,
                tenant="platform")  # fmt: skip
            rule, channel = "infra-alert-webhook", "webhook"
        nid = notification_id(self.source, eid, rule, to, channel)
        if channel == "push":
            self.tokens[to] = nid
        value, headers = encode(doc, "structured" if i % 2 == 0 else "binary")
        return topic, value, headers, Expected(eid, nid, channel, 0.0), None

    # ------------------------------------------------------------ outputs

    def deliveries(self) -> list[Any]:
        out = [d for p in self.smtp for d in p.deliveries()]
        out += self.webhook.deliveries()
        return out + [d for p in self.fcm for d in p.deliveries()]

    def sent_ids(self) -> set[str]:
        return {s.nid for s in self.statuses.items if s.status in ("sent", "unknown")}

    def audited(self, nids: list[str]) -> set[tuple[str, str]] | None:
        """(notification id, status) rows of audit_log for `nids`; None if Postgres is away."""
        try:
            with psycopg.connect(self.settings.postgres.conninfo(), connect_timeout=3) as c:
                rows = c.execute(
                    "select notification_id::text, status from audit_log "
                    "where notification_id = any(%s::uuid[])",
                    (nids,),
                ).fetchall()
        except psycopg.Error:
            return None
        return {(str(n), str(s)) for n, s in rows}

    def history(self, logs: list[Path]) -> History:
        statuses: list[Status] = list(self.statuses.items)
        return History(deliveries=self.deliveries(), statuses=statuses,
                       dlq_origins={o for o, _, _ in self.dlq.items},
                       dlq_events={e: r for _, r, e in self.dlq.items if e},
                       takeovers=takeovers_in(logs),
                       ambiguity=dict(AMBIGUITY))  # fmt: skip

    def close(self) -> None:
        self.statuses.close()
        self.dlq.close()
        for p in self.smtp:
            p.stop()
        for h in (self.webhook, *self.fcm):
            h.__exit__(None, None, None)


def _origin(msg: Any) -> tuple[str, str, str] | None:
    # (original topic/partition/offset, reason, the CloudEvent id inside when there is one)
    h = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or ()}
    parts = [h.get(f"kafka_dlt-original-{k}") for k in ("topic", "partition", "offset")]
    if not all(parts):
        return None
    try:
        # A dead letter keeps the original bytes: poison (20,000-deep JSON, garbage) included.
        ce_id = str(json.loads(msg.value() or b"null")["id"])
    except (ValueError, KeyError, TypeError, RecursionError):
        ce_id = ""
    return "/".join(p for p in parts if p), h.get("tidings-dlq-reason", "?"), ce_id
