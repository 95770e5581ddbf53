"""Provider receipts for the callbacks scenario: Twilio-signed `delivered` callbacks, one per
delivered email, posted to the callbacks stage and retried (as Twilio retries) until answered
with a status event. Each answered one is a Callback the checker holds the status topic to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from processors.channels.sms import twilio_signature, with_notification_id
from tests.chaos.history import Callback

__all__ = ["Receipts"]


class Receipts:
    """Posts a receipt for every id `ready()` returns, on a thread, until `stop()`."""

    def __init__(self, base: str, token: str, ready: Callable[[], set[str]],
                 max_tries: int = 60) -> None:  # fmt: skip
        self._base, self._token, self._ready, self._max = base, token, ready, max_tries
        self.acked: list[Callback] = []
        self.tries: dict[str, int] = {}
        self.answers: dict[int, int] = {}  # HTTP status (or 0: no answer) → how often
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)

    def start(self) -> Receipts:
        self._thread.start()
        return self

    def _run(self) -> None:
        done: set[str] = set()
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stop.wait(0.3):
                todo = [n for n in sorted(self._ready() - done) if self.tries.get(n, 0) < self._max]
                for nid in todo[:50]:
                    if self._stop.is_set():
                        return
                    if self._post(client, nid):
                        done.add(nid)

    def _post(self, client: httpx.Client, nid: str) -> bool:
        self.tries[nid] = self.tries.get(nid, 0) + 1
        url = with_notification_id(f"{self._base}/callbacks/twilio/twilio", nid)
        form = {"MessageSid": "SM" + nid.replace("-", ""), "MessageStatus": "delivered",
                "AccountSid": "AC" + "c" * 32}  # fmt: skip
        sig = twilio_signature(self._token, url, form)
        try:
            r = client.post(url, data=form, headers={"X-Twilio-Signature": sig})
        except httpx.HTTPError:
            self.answers[0] = self.answers.get(0, 0) + 1
            return False
        self.answers[r.status_code] = self.answers.get(r.status_code, 0) + 1
        if r.status_code == 200 and r.text.startswith("notification.delivered"):
            self.acked.append(Callback(nid, time.time()))
            return True
        return False  # 503, or "ignored: no send recorded" yet: try again later

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
