"""`/v1/recipients`: the recipient directory over HTTP, for a tenant's backends.

Writes go through the recipients topic (docs/contracts.md#recipients-topic), so Kafka stays
the source of truth: each is checked exactly as the recipients stage will check it
(`decode_change`, with the live catalog's categories and rules), produced, and answered 202
once the broker acknowledged it, with the record's partition and offset; the directory
shows it once the recipients stage applied that record (normally well under a second).
Reads come from the directory in Postgres. The preference and address endpoints read the
recipient, change it and produce the whole recipient (a read-modify-write: an upsert of the
same recipient still on the topic, not yet applied, is overwritten; docs/api.md).

Every route needs the `recipients:write` scope (or `admin`) and acts on the key's tenant.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ValidationError

from schemas.recipient import Address, Preferences, Recipient, RecipientChange, recipient_key
from schemas.settings import TidingsSettings
from streams.http.callbacks_producer import AckProducer
from streams.http.gateway.auth import Key
from streams.http.gateway.keys import ApiKey
from streams.http.gateway.problems import Problem, answered, problem_responses
from streams.http.gateway.produce import produce_acked
from streams.runtime.records import Out
from streams.state.catalog import CatalogRef
from streams.state.directory import Directory
from streams.state.recipient_rows import (
    decode_change,
    delete_change,
    describe,
    parse_json_line,
    upsert_change,
)

__all__ = ["ChangeAccepted", "directory_router"]

_SOURCE = "tidings-gateway"
_HEADERS = [("content-type", b"application/cloudevents+json")]


class ChangeAccepted(BaseModel):
    """A directory change durable on the recipients topic (202)."""

    tenant: str
    id: str
    type: str
    partition: int
    offset: int
    visible: str = (
        "once the recipients stage has applied this record (its consumer group's committed "
        "offset on that partition passes it); normally well under a second"
    )


def _need_scope(key: ApiKey) -> None:
    if not key.allows("recipients:write"):
        raise Problem(403, "Missing scope", "this API key lacks the recipients:write scope")


def directory_router(
    settings: TidingsSettings,
    producer: AckProducer,
    directory: Directory,
    catalog: CatalogRef | None,
) -> APIRouter:
    """The routes (nothing connects here)."""
    router = APIRouter(prefix="/v1/recipients", tags=["recipients"],
                       responses=problem_responses(401, 403, 429, 503))  # fmt: skip
    topic = settings.topics.recipients

    async def produce(key: bytes, change: RecipientChange) -> ChangeAccepted:
        value = change.model_dump_json(exclude_none=True).encode()
        try:  # exactly what the recipients stage will decode, or a 400 now
            decode_change(key, value, catalog.current if catalog is not None else None)
        except ValueError as exc:
            raise Problem(400, "Invalid recipient", str(exc), "/") from None
        [(part, off)] = await produce_acked(producer, [Out(topic, value, key, _HEADERS)], "retry")
        tenant, _, rid = key.decode().partition("/")
        return ChangeAccepted(tenant=tenant, id=rid, type=change.type, partition=part, offset=off)

    async def stored(tenant: str, rid: str) -> Recipient:
        found = await answered(
            asyncio.to_thread(directory.lookup, [(tenant, rid)]), "Directory", "/path/rid"
        )
        r = found.get((tenant, rid))
        if r is None:
            raise Problem(404, "No such recipient",
                          f"tenant {tenant!r} has no recipient {rid!r} in the directory (a "
                          "write is visible once the recipients stage applied it)")  # fmt: skip
        return r

    def recipient(tenant: str, rid: str, doc: dict[str, Any]) -> Recipient:
        for field, want in (("tenant", tenant), ("id", rid)):
            if doc.get(field) not in (None, want):
                raise Problem(400, "Mismatch", f"the body's {field} {doc[field]!r} is not the "
                              f"URL's / the key's {want!r}: leave it out", f"/{field}")  # fmt: skip
        try:  # the bounds, and the email and phone rules, as an import checks them
            return parse_json_line(json.dumps({**doc, "tenant": tenant, "id": rid}))
        except ValueError as exc:
            raise Problem(400, "Invalid recipient", str(exc), "/") from None

    def upsert(r: Recipient) -> RecipientChange:
        return upsert_change(r, source=_SOURCE).model_copy(update={"time": datetime.now(UTC)})

    async def change(
        key: ApiKey, rid: str, edit: Callable[[Recipient], Recipient]
    ) -> ChangeAccepted:
        r = await stored(key.tenant, rid)
        new = recipient(key.tenant, rid, json.loads(edit(r).model_dump_json()))
        return await produce(new.key(), upsert(new))

    @router.put("/{rid}", status_code=202, response_model=ChangeAccepted,
                responses=problem_responses(400, 413))  # fmt: skip
    async def put_recipient(
        rid: str, key: Key, body: Annotated[dict[str, Any], Body()]
    ) -> ChangeAccepted:
        """Create or replace a recipient (all its fields and addresses)."""
        _need_scope(key)
        r = recipient(key.tenant, rid, body)
        return await produce(r.key(), upsert(r))

    @router.get("/{rid}", response_model=Recipient, responses=problem_responses(404))
    async def get_recipient(rid: str, key: Key) -> Recipient:
        """The recipient as the directory holds it (dead push tokens left out)."""
        _need_scope(key)
        return await stored(key.tenant, rid)

    @router.delete("/{rid}", status_code=202, response_model=ChangeAccepted,
                   responses=problem_responses(400))  # fmt: skip
    async def delete_recipient(rid: str, key: Key) -> ChangeAccepted:
        """Erase a recipient: its row, addresses and preferences (docs/recipients.md)."""
        _need_scope(key)
        return await produce(recipient_key(key.tenant, rid),
                             delete_change(key.tenant, rid, source=_SOURCE))  # fmt: skip

    @router.get("/{rid}/preferences", response_model=Preferences,
                responses=problem_responses(404))  # fmt: skip
    async def get_preferences(rid: str, key: Key) -> Preferences:
        """The recipient's own preferences (the tenant's defaults lie under them)."""
        _need_scope(key)
        return (await stored(key.tenant, rid)).preferences

    @router.put("/{rid}/preferences", status_code=202, response_model=ChangeAccepted,
                responses=problem_responses(400, 404, 413))  # fmt: skip
    async def put_preferences(
        rid: str, key: Key, body: Annotated[dict[str, Any], Body()]
    ) -> ChangeAccepted:
        """Replace the recipient's preferences (opt-outs, opt-ins, quiet hours)."""
        _need_scope(key)
        try:
            prefs = Preferences.model_validate(body)
        except ValidationError as exc:
            raise Problem(400, "Invalid preferences", describe(exc), "/") from None
        return await change(key, rid, lambda r: r.model_copy(update={"preferences": prefs}))

    @router.post("/{rid}/addresses", status_code=202, response_model=ChangeAccepted,
                 responses=problem_responses(400, 404, 413))  # fmt: skip
    async def add_address(
        rid: str, key: Key, body: Annotated[dict[str, Any], Body()]
    ) -> ChangeAccepted:
        """Add a device token, Web Push subscription, Slack or webhook URL (once: a known
        (channel, address) replaces the old entry, e.g. with a newer last_seen)."""
        _need_scope(key)
        try:
            a = Address.model_validate(body)
        except ValidationError as exc:
            raise Problem(400, "Invalid address", describe(exc), "/") from None

        def add(r: Recipient) -> Recipient:
            kept = tuple(x for x in r.addresses if (x.channel, x.address) != (a.channel, a.address))
            return r.model_copy(update={"addresses": (*kept, a)})

        return await change(key, rid, add)

    @router.delete("/{rid}/addresses", status_code=202, response_model=ChangeAccepted,
                   responses=problem_responses(400, 404))  # fmt: skip
    async def remove_address(
        rid: str, key: Key,
        channel: Annotated[str, Query()], address: Annotated[str, Query()],
    ) -> ChangeAccepted:  # fmt: skip
        """Remove one address (a logged-out device)."""
        _need_scope(key)
        r = await stored(key.tenant, rid)
        if not any((x.channel, x.address) == (channel, address) for x in r.addresses):
            detail = f"recipient {rid!r} has no {channel} address {address[:64]!r}"
            raise Problem(404, "No such address", detail)
        return await change(key, rid, lambda r: r.model_copy(update={"addresses": tuple(
            x for x in r.addresses if (x.channel, x.address) != (channel, address))}))  # fmt: skip

    return router
