"""One-click unsubscribe (RFC 8058) at the callbacks endpoint: a signed link → an opt-out.

`POST /callbacks/unsubscribe/<token>` with the form body `List-Unsubscribe=One-Click` (what
a mailbox provider sends for the List-Unsubscribe-Post header; the confirmation page's form
sends the same) answers:

- 200: the opt-out is on the recipients topic (a `tidings.recipient.upserted` record), or was
  already set; and an `unsubscribed` status event is produced;
- 200: the recipient is not in the directory (erased since): nothing is produced;
- 400: no `List-Unsubscribe=One-Click` in the body;
- 403: the token is malformed, forged, or older than `callbacks.unsubscribe_max_age_days`;
- 404: no `callbacks.unsubscribe_secrets` are configured;
- 503: Postgres or Kafka unavailable: the caller may retry (a retry produces the same upsert).

`GET` on the same URL verifies the token and shows a page with a button that POSTs; it
changes nothing (link scanners fetch URLs in mail, RFC 8058 section 3.2).

The opt-out is the notification's category (`opt-out:category:<c>`), else its rule. It is
applied by reading the recipient from the directory, adding the opt-out, and producing the
whole recipient as an upsert on the recipients topic (Kafka stays the source of truth; the
recipients stage then writes the directory). Known limit: an upsert of the same recipient
already on the topic but not yet applied by the recipients stage is overwritten by this one
(docs/recipients.md, "One-click unsubscribe").
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
import uuid
from functools import partial

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from processors.channels.email import InvalidUnsubscribeToken, UnsubscribeToken, verify_token
from schemas.notification import NAMESPACE, Notification
from schemas.recipient import Preferences, Recipient, RecipientChange
from schemas.settings import TidingsSettings
from schemas.status import StatusEvent, build_status
from streams.exceptions import DependencyDown
from streams.http.callbacks import STAGE
from streams.http.callbacks_app import answer
from streams.http.callbacks_producer import AckProducer, NotAcknowledgedError
from streams.runtime.metrics import Metrics
from streams.runtime.records import Out
from streams.state import DeliveryLog, Directory

__all__ = ["UnsubscribeHandlers", "opted_out", "unsubscribe_change", "unsubscribed_event"]

log = logging.getLogger(__name__)


def opted_out(prefs: Preferences, t: UnsubscribeToken) -> Preferences | None:
    """`prefs` with the token's opt-out added (and any opt-in of it lifted), or None when
    already opted out; pure."""
    kind, name = t.opt_out()
    field = "categories" if kind == "category" else "rules"
    if name in getattr(prefs, field):
        return None
    opt_in = prefs.opt_in.model_copy(
        update={field: tuple(x for x in getattr(prefs.opt_in, field) if x != name)}
    )
    return prefs.model_copy(update={field: (*getattr(prefs, field), name), "opt_in": opt_in})


def unsubscribe_change(r: Recipient, prefs: Preferences, t: UnsubscribeToken) -> RecipientChange:
    """The upsert record of `r` with `prefs`; its id derives from the link; pure."""
    rid = uuid.uuid5(NAMESPACE, f"unsubscribe\x1f{t.notification_id}\x1f{t.reason()}")
    # Through the model: the record is exactly what the recipients stage validates.
    data = r.model_copy(update={"preferences": prefs}).model_dump(mode="json")
    return RecipientChange(
        id=str(rid), source=f"tidings/{STAGE}", type="tidings.recipient.upserted", data=data
    )


def unsubscribed_event(n: Notification, t: UnsubscribeToken) -> StatusEvent:
    """The `unsubscribed` status of the notification whose mail carried the link; pure."""
    return build_status(n, "unsubscribed", stage=STAGE, extra={"reason": t.reason()})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Unsubscribe</h1><p>{what}</p>{form}</body></html>
"""
_FORM = (
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>'
)


def _what(t: UnsubscribeToken) -> str:
    kind, name = t.opt_out()
    return f"Stop {'all ' + name if kind == 'category' else 'these'} notifications"


class UnsubscribeHandlers:
    """The two handlers over the directory (reads), the delivery log and a producer."""

    def __init__(
        self,
        settings: TidingsSettings,
        directory: Directory,
        deliveries: DeliveryLog,
        producer: AckProducer,
        metrics: Metrics,
    ) -> None:
        cb = settings.callbacks
        self._secrets = [s.get_secret_value().encode() for s in cb.unsubscribe_secrets]
        self._max_age_s = cb.unsubscribe_max_age_days * 86400.0
        self._topics = settings.topics
        self._directory = directory
        self._deliveries = deliveries
        self._producer = producer
        self._metrics = metrics
        self._answer = partial(answer, metrics)

    def _token(self, request: Request) -> UnsubscribeToken | Response:
        if not self._secrets:
            return self._answer(404, "one-click unsubscribe is not configured here "
                                "(callbacks.unsubscribe_secrets)", "rejected")  # fmt: skip
        try:
            return verify_token(self._secrets, request.path_params["token"],
                                now_s=time.time(), max_age_s=self._max_age_s)  # fmt: skip
        except InvalidUnsubscribeToken as exc:
            log.warning("callbacks: refused an unsubscribe link from %s: %s",
                        request.client.host if request.client else "?", exc)  # fmt: skip
            return self._answer(403, f"this unsubscribe link is not valid: {exc}", "rejected")

    async def page(self, request: Request) -> Response:
        """GET: a confirmation page; changes nothing."""
        t = self._token(request)
        if isinstance(t, Response):
            return t
        body = _PAGE.format(what=html.escape(_what(t)) + "?", form=_FORM)
        return HTMLResponse(body)

    async def one_click(self, request: Request) -> Response:
        """POST: the one-click unsubscribe (module docstring: the answers)."""
        t = self._token(request)
        if isinstance(t, Response):
            return t
        # RFC 8058 allows either encoding of the form (urlencoded, multipart/form-data).
        form = await request.form(max_files=0, max_fields=16)
        if form.get("List-Unsubscribe") != "One-Click":
            return self._answer(400, "expected the form field List-Unsubscribe=One-Click "
                                "(RFC 8058)", "rejected")  # fmt: skip
        try:
            found = await asyncio.to_thread(self._directory.lookup, [(t.tenant, t.user)])
        except DependencyDown as exc:
            log.error("callbacks: unsubscribe: %s", exc)
            return self._answer(503, "the directory is unavailable; retry later", "unavailable")
        r = found.get((t.tenant, t.user))
        if r is None:
            log.info("callbacks: unsubscribe for %s/%s: not in the directory; nothing to do",
                     t.tenant, t.user)  # fmt: skip
            return self._answer(200, "nothing to unsubscribe: the recipient is gone", "ignored")
        prefs = opted_out(r.preferences, t)
        try:
            if prefs is not None:
                change = unsubscribe_change(r, prefs, t)
                raw = change.model_dump_json().encode()
                await self._producer.send(Out(self._topics.recipients, raw, r.key()))
            await self._status(t)
        except NotAcknowledgedError as exc:
            log.error("callbacks: unsubscribe of %s/%s not produced: %s", t.tenant, t.user, exc)
            return self._answer(503, "Kafka did not acknowledge the change; retry later",
                                "unavailable")  # fmt: skip
        self._metrics.incr("callbacks_unsubscribed")
        log.info("callbacks: %s/%s unsubscribed (%s)", t.tenant, t.user, t.reason())
        body = _PAGE.format(what=html.escape(f"Done: {_what(t).lower()}."), form="")
        return HTMLResponse(body)

    async def _status(self, t: UnsubscribeToken) -> None:
        """The `unsubscribed` status, when the notification's send is on record."""
        try:
            delivery = await self._deliveries.delivery(t.notification_id)
        except DependencyDown as exc:
            # The opt-out is in; the status event is the lesser half: say so, don't fail.
            log.error("callbacks: no unsubscribed status for %s: %s", t.notification_id, exc)
            return
        if delivery is None or delivery.notification is None:
            log.warning("callbacks: no send of %s on record: no unsubscribed status",
                        t.notification_id)  # fmt: skip
            return
        try:
            n = Notification.decode(delivery.notification)
        except ValidationError as exc:
            log.error("callbacks: stored dispatch record of %s is unreadable: %s",
                      t.notification_id, exc)  # fmt: skip
            return
        ev = unsubscribed_event(n, t)
        await self._producer.send(Out(self._topics.status, ev.encode(), ev.key(), ev.headers()))
