"""The HTTP half of provider callbacks (aiohttp): Twilio status callbacks → status events.

`POST /callbacks/twilio/{provider}?nid=<notification id>` answers:

| status | when | emitted |
|---|---|---|
| 200 | `delivered` / `failed` status event acknowledged by Kafka | one status event |
| 200 | no/invalid `nid`, or no `deliveries` row for it (logged: a retry cannot help) | nothing |
| 204 | an intermediate `MessageStatus` (queued, sending, sent, …) | nothing |
| 403 | `X-Twilio-Signature` missing or wrong (logged) | nothing |
| 404 | no Twilio provider of that name in `channels.sms` | nothing |
| 413 / 415 | body over 64 KiB / not a urlencoded form | nothing |
| 503 | Postgres or Kafka unavailable: the caller may retry | nothing |

With `unsubscribe` handlers, `GET`/`POST /callbacks/unsubscribe/<token>` is the one-click
unsubscribe of RFC 8058 (`streams.http.unsubscribe`).

`GET /healthz` answers 200 `ok` while the server runs.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from processors.channels.email import UNSUBSCRIBE_ROUTE
from processors.channels.sms import callback_status, validate_twilio_signature
from schemas.notification import Notification
from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown
from streams.http.callbacks import (
    TWILIO_ROUTE,
    notification_ref,
    redact,
    signed_url,
    twilio_event,
    twilio_providers,
)
from streams.http.callbacks_producer import AckProducer, NotAcknowledgedError
from streams.runtime.metrics import Metrics
from streams.runtime.records import Out
from streams.state import DeliveryLog

if TYPE_CHECKING:
    from streams.http.unsubscribe import UnsubscribeHandlers

__all__ = ["MAX_BODY_BYTES", "CallbackHandlers", "answer"]

log = logging.getLogger(__name__)

# Twilio's status callbacks are well under 2 KiB; anything far larger is not Twilio.
MAX_BODY_BYTES = 64 * 1024
_FORM = "application/x-www-form-urlencoded"


def answer(metrics: Metrics, status: int, text: str, counter: str) -> web.Response:
    """A plain-text answer of the callbacks endpoint, counted as `callbacks_<counter>`
    (the Twilio and the unsubscribe handlers answer so)."""
    metrics.incr(f"callbacks_{counter}")
    return web.Response(status=status, text=text + "\n")


class CallbackHandlers:
    """Request handlers over a delivery log (lookups) and an acknowledging producer.

    Nothing connects here: the log connects on first lookup, the producer is started by the
    caller (`streams.stages.callbacks`).
    """

    def __init__(
        self,
        settings: TidingsSettings,
        deliveries: DeliveryLog,
        producer: AckProducer,
        metrics: Metrics,
        unsubscribe: UnsubscribeHandlers | None = None,
    ) -> None:
        self._unsubscribe = unsubscribe
        self._base = settings.callbacks.base_url()
        self._topic = settings.topics.status
        self._twilio = twilio_providers(settings.channels.sms)
        self._deliveries = deliveries
        self._producer = producer
        self._metrics = metrics
        self._answer = partial(answer, metrics)

    def app(self) -> web.Application:
        """The aiohttp application (request bodies bounded by MAX_BODY_BYTES)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(TWILIO_ROUTE, self.twilio)
        if self._unsubscribe is not None:
            app.router.add_get(UNSUBSCRIBE_ROUTE, self._unsubscribe.page)
            app.router.add_post(UNSUBSCRIBE_ROUTE, self._unsubscribe.one_click)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the server answers."""
        return web.Response(text="ok\n")

    async def twilio(self, request: web.Request) -> web.Response:
        """One Twilio status callback; see the module docstring for the answers."""
        name = request.match_info["provider"]
        provider = self._twilio.get(name)
        if provider is None:
            return self._answer(404, f"no Twilio provider named {name!r} in channels.sms; "
                                "configure one (kind: twilio, name: …) or fix the callback URL",
                                "rejected")  # fmt: skip
        if request.content_type != _FORM:
            return self._answer(415, f"expected a {_FORM} body, got {request.content_type!r}",
                                "rejected")  # fmt: skip
        params: dict[str, list[str]] = {}
        for key, value in (await request.post()).items():
            if not isinstance(value, str):
                return self._answer(400, f"form field {key!r} is not text", "rejected")
            params.setdefault(key, []).append(value)
        url = signed_url(self._base, request.raw_path)
        token = provider.auth_token.get_secret_value()
        signature = request.headers.get("X-Twilio-Signature")
        if not validate_twilio_signature(token, url, params, signature):
            log.warning(
                "callbacks: refused a Twilio callback for provider %r from %s: "
                "X-Twilio-Signature missing or wrong for %s",
                name, request.remote, redact(url),
            )  # fmt: skip
            return self._answer(
                403,
                f"X-Twilio-Signature missing or invalid for {redact(url)}: callbacks.public_url "
                f"must be the base URL Twilio calls, and the auth_token that of provider {name!r}",
                "rejected",
            )
        form = {k: v[0] for k, v in params.items()}
        return await self._twilio_status(request, name, form)

    async def _twilio_status(
        self, request: web.Request, provider: str, form: dict[str, str]
    ) -> web.Response:
        if callback_status(form) is None:
            return web.Response(status=204)  # queued, sending, sent, …: not a final receipt
        sid = form.get("MessageSid", "?")
        nid = notification_ref(request.query)
        if nid is None:
            # Not a URL tidings made (no nid): nothing to correlate, and Twilio retrying won't help.
            log.warning("callbacks: Twilio callback for %s (%s) has no valid nid query parameter; "
                        "ignored", sid, form.get("MessageStatus"))  # fmt: skip
            return self._answer(200, "ignored: no nid query parameter", "ignored")
        try:
            delivery = await self._deliveries.delivery(nid)
        except DependencyDown as exc:
            log.error("callbacks: %s", exc)
            return self._answer(503, "the delivery log is unavailable; retry later", "unavailable")
        if delivery is None or delivery.notification is None:
            why = "no send recorded" if delivery is None else "recorded before migration 0004"
            log.warning("callbacks: Twilio callback for notification %s (%s, %s): %s; ignored",
                        nid, sid, form.get("MessageStatus"), why)  # fmt: skip
            return self._answer(200, f"ignored: notification {nid}: {why}", "ignored")
        try:
            n = Notification.decode(delivery.notification)
        except ValidationError as exc:
            log.error("callbacks: stored dispatch record of %s is unreadable: %s", nid, exc)
            return self._answer(200, f"ignored: notification {nid} unreadable", "ignored")
        ev = twilio_event(form, n, provider=provider, attempt=delivery.sent.attempt)
        assert ev is not None  # callback_status() was final above
        try:
            await self._producer.send(Out(self._topic, ev.encode(), ev.key(), ev.headers()))
        except NotAcknowledgedError as exc:
            log.error("callbacks: status %s of %s not produced: %s", ev.data.status, nid, exc)
            return self._answer(503, "Kafka did not acknowledge the status event; retry later",
                                "unavailable")  # fmt: skip
        self._metrics.incr(f"callbacks_{ev.data.status}")
        return web.Response(text=f"{ev.type} {ev.id}\n")
