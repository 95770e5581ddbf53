"""The HTTP half of provider callbacks (FastAPI, like the gateway): Twilio status callbacks →
status events.

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
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import ValidationError

from processors.channels.email import UNSUBSCRIBE_ROUTE
from processors.channels.sms import callback_status, validate_twilio_signature
from schemas.notification import Notification
from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown
from streams.http.body_limit import BodyLimit
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

__all__ = ["MAX_BODY_BYTES", "CallbackHandlers", "answer", "form_fields", "raw_target"]

log = logging.getLogger(__name__)

# Twilio's status callbacks are well under 2 KiB; anything far larger is not Twilio.
MAX_BODY_BYTES = 64 * 1024
_FORM = "application/x-www-form-urlencoded"


def answer(metrics: Metrics, status: int, text: str, counter: str) -> Response:
    """A plain-text answer of the callbacks endpoint, counted as `callbacks_<counter>`
    (the Twilio and the unsubscribe handlers answer so)."""
    metrics.incr(f"callbacks_{counter}")
    return PlainTextResponse(text + "\n", status_code=status)


def _too_large(limit: int) -> tuple[str, bytes]:
    return "text/plain; charset=utf-8", f"the body is more than {limit} bytes\n".encode()


def raw_target(request: Request) -> str:
    """The request's path and query exactly as the client sent them (what a signature over
    the URL covers), not decoded and re-encoded."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


async def form_fields(request: Request) -> dict[str, list[str]]:
    """The fields of an application/x-www-form-urlencoded body (bounded by BodyLimit)."""
    body = (await request.body()).decode("utf-8", "replace")
    fields: dict[str, list[str]] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        fields.setdefault(key, []).append(value)
    return fields


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


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

    def app(self) -> FastAPI:
        """The ASGI application (request bodies bounded by MAX_BODY_BYTES); connects nothing."""
        app = FastAPI(title="tidings callbacks", openapi_url=None, docs_url=None,
                      redoc_url=None)  # fmt: skip
        app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, refusal=_too_large)
        app.add_api_route(TWILIO_ROUTE, self.twilio, methods=["POST"])
        if self._unsubscribe is not None:
            route = UNSUBSCRIBE_ROUTE
            app.add_api_route(route, self._unsubscribe.page, methods=["GET"])
            app.add_api_route(route, self._unsubscribe.one_click, methods=["POST"])
        app.add_api_route("/healthz", self.healthz, methods=["GET"])
        return app

    async def healthz(self) -> Response:
        """Liveness: the server answers."""
        return PlainTextResponse("ok\n")

    async def twilio(self, request: Request) -> Response:
        """One Twilio status callback; see the module docstring for the answers."""
        name = request.path_params["provider"]
        provider = self._twilio.get(name)
        if provider is None:
            return self._answer(404, f"no Twilio provider named {name!r} in channels.sms; "
                                "configure one (kind: twilio, name: …) or fix the callback URL",
                                "rejected")  # fmt: skip
        if _media(request) != _FORM:
            return self._answer(415, f"expected a {_FORM} body, got {_media(request)!r}",
                                "rejected")  # fmt: skip
        params = await form_fields(request)
        url = signed_url(self._base, raw_target(request))
        token = provider.auth_token.get_secret_value()
        signature = request.headers.get("X-Twilio-Signature")
        if not validate_twilio_signature(token, url, params, signature):
            log.warning(
                "callbacks: refused a Twilio callback for provider %r from %s: "
                "X-Twilio-Signature missing or wrong for %s",
                name, request.client.host if request.client else "?", redact(url),
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
        self, request: Request, provider: str, form: dict[str, str]
    ) -> Response:
        if callback_status(form) is None:
            return Response(status_code=204)  # queued, sending, sent, …: not a final receipt
        sid = form.get("MessageSid", "?")
        nid = notification_ref(request.query_params)
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
        return PlainTextResponse(f"{ev.type} {ev.id}\n")
