"""The providers' side of a chaos run: SMTP sinks, a signed-webhook endpoint, FCM peers.

Each records every arrival with its wall-clock time and can be told to refuse for a while
(`failing = True`): SMTP answers 451, HTTP peers 503.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from standardwebhooks import Webhook

from streams.dev.smtp_sink import SmtpSink
from tests.chaos.history import Delivery
from tests.peers.fcm import FcmPeer
from tests.peers.http_server import HttpPeer, Recorded, Reply

__all__ = ["FcmChaosPeer", "SmtpPeer", "WebhookPeer"]


def _quiet(peer: HttpPeer) -> None:
    """A sender killed mid-request resets its connection: that is the point, not an error."""
    peer._server.handle_error = lambda request, address: None  # type: ignore[method-assign]


class SmtpPeer:
    """An SMTP sink whose .eml files are the deliveries (named after the notification id)."""

    def __init__(self, name: str, directory: Path, delay_s: float = 0.0) -> None:
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self.sink = SmtpSink(directory, port=0, delay_s=delay_s)
        self.sink.start()

    @property
    def port(self) -> int:
        return self.sink.port

    @property
    def failing(self) -> bool:
        return self.sink.fail_with is not None

    @failing.setter
    def failing(self, on: bool) -> None:
        self.sink.fail_with = (451, "4.3.0 chaos: try again later") if on else None

    def deliveries(self) -> list[Delivery]:
        out = []
        for f in self.sink.directory.glob("*.eml"):
            nid = f.name.split("@")[0].lstrip("<").split(".dup-")[0]
            out.append(Delivery(nid, "email", self.name, f.stat().st_mtime))
        return out

    def count(self) -> int:
        return sum(1 for _ in self.sink.directory.glob("*.eml"))

    def stop(self) -> None:
        self.sink.stop()


class WebhookPeer(HttpPeer):
    """Verifies each Standard Webhooks signature; a verified request is a delivery."""

    def __init__(self, secret: str) -> None:
        super().__init__(self._answer)
        _quiet(self)
        self._verifier = Webhook(secret)
        self.failing = False
        self.arrivals: list[Delivery] = []
        self.bad_signatures = 0
        self._mine = threading.Lock()

    def _answer(self, req: Recorded) -> Reply:
        if self.failing:
            return Reply(503, {"Retry-After": "1"}, b"chaos: unavailable")
        try:
            self._verifier.verify(req.body, req.headers)
        except Exception:
            with self._mine:
                self.bad_signatures += 1
            return Reply(400, body=b"bad signature")
        with self._mine:
            self.arrivals.append(Delivery(req.headers["webhook-id"], "webhook", "webhook",
                                          time.time()))  # fmt: skip
        return Reply(200, body=b"ok")

    def deliveries(self) -> list[Delivery]:
        with self._mine:
            return list(self.arrivals)


class FcmChaosPeer(FcmPeer):
    """The FCM v1 peer; each accepted message is a delivery of the notification of its token."""

    def __init__(self, name: str, public_pem: str, client_email: str,
                 token_to_nid: dict[str, str]) -> None:  # fmt: skip
        super().__init__(public_pem, client_email)
        _quiet(self)
        self.name = name
        self.failing = False
        self.arrivals: list[Delivery] = []
        self._tokens = token_to_nid
        self._mine = threading.Lock()

    def _send(self, req: Recorded) -> Reply:
        if self.failing:
            body = {"error": {"code": 503, "status": "UNAVAILABLE", "message": "chaos"}}
            return Reply(503, {"Content-Type": "application/json"}, json.dumps(body).encode())
        reply = super()._send(req)
        if reply.status == 200:
            token = json.loads(req.body)["message"].get("token", "")
            nid = self._tokens.get(token, f"unknown-token:{token}")
            with self._mine:
                self.arrivals.append(Delivery(nid, "push", self.name, time.time()))
        return reply

    def deliveries(self) -> list[Delivery]:
        with self._mine:
            return list(self.arrivals)
