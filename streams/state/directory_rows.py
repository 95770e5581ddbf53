"""The directory's rows and SQL: how a recipient is laid out in the batch tables and merged.

Pure (no I/O) apart from `_Feed`, the thread that lays an import's recipients out, and
formats them for COPY, chunk by chunk. `Directory` (streams/state/directory.py) runs what is
here; nothing else should.
"""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg.copy import FileWriter

from schemas.recipient import NO_PREFERENCES, Address, Recipient, RecipientChange

__all__ = ["IMPORT_CHUNK", "NO_PREFERENCES", "Change", "Prepared", "change_target", "prepare"]

# One record of the recipients topic as the stage hands it over: (partition, offset, the
# decoded change or None for a tombstone, the record key `<tenant>/<id>`).
Change = tuple[int, int, RecipientChange | None, bytes]

# The batch tables every write goes through: one row per recipient (`seq` its place in the
# batch) and one per address, each filled by one COPY.
_BATCH_COLUMNS = (
    "seq", "tenant", "id", "email", "phone", "locale", "timezone", "attributes",
    "preferences", "src_partition", "src_offset",
)  # fmt: skip
_BATCH_TYPES = (
    "int8", "text", "text", "text", "text", "text", "text", "text", "text", "int4", "int8",
)  # fmt: skip
_ADDR_COLUMNS = (
    "seq", "tenant", "recipient_id", "position", "channel", "address", "platform", "app_id",
    "last_seen", "endpoint",
)  # fmt: skip
_ADDR_TYPES = (
    "int8", "text", "text", "int4", "text", "text", "text", "text", "timestamptz", "text",
)  # fmt: skip
_TEMP = (
    "create temp table if not exists dir_batch ("
    " seq bigint not null, tenant text not null, id text not null, email text, phone text,"
    " locale text, timezone text, attributes text not null, preferences text not null,"
    " src_partition integer not null, src_offset bigint not null) on commit delete rows;"
    "create temp table if not exists dir_addr ("
    " seq bigint not null, tenant text not null, recipient_id text not null,"
    " position integer not null, channel text not null, address text not null,"
    " platform text, app_id text, last_seen timestamptz, endpoint text)"
    " on commit delete rows;"
    "create temp table if not exists dir_applied (tenant text not null, id text not null)"
    " on commit delete rows"
)
_COPY = f"copy dir_batch ({', '.join(_BATCH_COLUMNS)}) from stdin (format binary)"
_COPY_ADDR = f"copy dir_addr ({', '.join(_ADDR_COLUMNS)}) from stdin (format binary)"

_FIELDS = "email, phone, locale, timezone, attributes, preferences"
_SET = (
    "email = excluded.email, phone = excluded.phone, locale = excluded.locale, "
    "timezone = excluded.timezone, attributes = excluded.attributes, "
    "preferences = excluded.preferences, updated_at = now()"
)


def _upsert(source: str, *, from_topic: bool) -> str:
    """The upsert of every recipient in `source` (a dir_batch-shaped relation).

    From the topic: only where the change is newer than the row (another partition counts
    as newer: the topic was repartitioned, or the row was imported), moving the row's
    position. From an import: always, keeping the row's topic position, so an older topic
    record replayed later still can't overwrite what was imported after it.
    """
    cols = f"tenant, id, {_FIELDS}, src_partition, src_offset"
    vals = (
        "tenant, id, email, phone, locale, timezone, attributes::jsonb, preferences::jsonb, "
        "src_partition, src_offset"
    )
    head = f"insert into recipients as r ({cols}) select {vals} from {source} s "
    if not from_topic:
        # (rows written, rows that existed before): only those have old addresses to delete.
        return (
            f"with up as ({head}on conflict (tenant, id) do update set {_SET} "
            "returning r.tenant, r.id, r.xmax = 0 as inserted), "
            "old as (insert into dir_applied select tenant, id from up where not inserted "
            "returning 1) select (select count(*) from up), (select count(*) from old)"
        )
    return (
        f"with up as ({head}on conflict (tenant, id) do update set {_SET}, "
        "src_partition = excluded.src_partition, src_offset = excluded.src_offset "
        "where r.src_partition <> excluded.src_partition or r.src_offset < excluded.src_offset "
        "returning r.tenant, r.id) insert into dir_applied select tenant, id from up"
    )


def _insert_new(source: str) -> str:
    """The plain insert of every recipient in `source`, for an import chunk of new ones.

    Half the cost of `_upsert`'s ON CONFLICT path per row; a key that exists already (or
    is in `source` twice) raises UniqueViolation, and the chunk goes the upsert's way.
    """
    return (
        f"insert into recipients (tenant, id, {_FIELDS}, src_partition, src_offset) "
        "select tenant, id, email, phone, locale, timezone, attributes::jsonb, "
        f"preferences::jsonb, src_partition, src_offset from {source}"
    )


def _addresses(keys: str, only: str) -> tuple[str, str]:
    """(delete the old addresses, insert the new ones) of the recipients in `keys`.

    The new ones are dir_addr's rows, those of `only` ("": all). An address `dead_tokens`
    lists is left out unless it was seen after it was reported dead.
    """
    delete = (
        f"delete from recipient_addresses a using {keys} x "
        "where a.tenant = x.tenant and a.recipient_id = x.id"
    )
    insert = (
        "insert into recipient_addresses (tenant, recipient_id, position, channel, address, "
        "platform, app_id, last_seen, endpoint) "
        "select b.tenant, b.recipient_id, b.position, b.channel, b.address, b.platform, "
        f"b.app_id, b.last_seen, b.endpoint from dir_addr b{only} "
        "where not exists (select 1 from dead_tokens d where d.channel = b.channel "
        "and d.token = coalesce(b.endpoint, b.address) "
        "and (b.last_seen is null or b.last_seen <= d.last_seen_at))"
    )
    return delete, insert


# Only the addresses of the recipients applied (from the topic: those newer than the row).
_ONLY_APPLIED = " join dir_applied x on x.tenant = b.tenant and x.id = b.recipient_id"
# An import chunk listing a recipient twice: only its last one counts.
_DEDUPED = "(select distinct on (tenant, id) * from dir_batch order by tenant, id, seq desc)"
_ONLY_LAST = (
    " join (select distinct on (tenant, id) seq from dir_batch order by tenant, id, seq desc)"
    " w on w.seq = b.seq"
)

_DELETE = (
    "delete from recipients r "
    "using unnest(%s::text[], %s::text[], %s::int[], %s::bigint[]) as d(tenant, id, p, o) "
    "where r.tenant = d.tenant and r.id = d.id and (r.src_partition <> d.p or r.src_offset < d.o)"
)

_LOOKUP = (
    "select json_build_object('tenant', r.tenant, 'id', r.id, 'email', r.email, "
    "'phone', r.phone, 'locale', r.locale, 'timezone', r.timezone, "
    "'attributes', r.attributes, 'preferences', r.preferences, 'addresses', "
    "coalesce((select json_agg(json_build_object('channel', a.channel, 'address', a.address, "
    "'platform', a.platform, 'app_id', a.app_id, 'last_seen', a.last_seen) "
    "order by a.position, a.address) from recipient_addresses a "
    "where a.tenant = r.tenant and a.recipient_id = r.id), '[]'::json))::text "
    "from unnest(%s::text[], %s::text[]) as k(tenant, id) "
    "join recipients r on r.tenant = k.tenant and r.id = k.id"
)

# Rows per COPY of an import: big enough that a round trip is nothing, small enough that
# reading the next chunk overlaps Postgres merging this one, and memory stays bounded.
IMPORT_CHUNK = 20_000

# The preferences of a recipient who set none (share it: building one costs more than a row).


def change_target(change: RecipientChange | None, key: bytes) -> tuple[str, str]:
    """(tenant, id) a change is about: its data's, or for a tombstone its key's; pure.

    A tombstone's key `<tenant>/<id>` splits at its first `/` (a tenant containing `/` is
    deleted with a `tidings.recipient.deleted` record instead). Raises ValueError.
    """
    if change is not None:
        return change.target()
    text = key.decode("utf-8")  # UnicodeDecodeError is a ValueError
    tenant, sep, rid = text.partition("/")
    if not sep or not rid:
        raise ValueError(f"tombstone key {text[:80]!r} is not <tenant>/<id>")
    return tenant, rid


def _endpoint(a: Address) -> str | None:
    # What a push service reports dead for a Web Push subscription: its endpoint URL.
    if a.channel != "webpush" or not a.address.startswith("{"):
        return None
    try:
        endpoint = json.loads(a.address).get("endpoint")
    except (ValueError, AttributeError):
        return None
    return endpoint if isinstance(endpoint, str) else None


_DUMP = json.JSONEncoder(separators=(",", ":"), default=str).encode

# A recipient as the directory stores it: (tenant, id, email, phone, locale, timezone,
# attributes JSON, preferences JSON), and its addresses as (channel, address, platform,
# app_id, last_seen, endpoint), each (channel, address) once.
Prepared = tuple[tuple[Any, ...], list[tuple[Any, ...]]]
# One recipient's rows of the batch tables: its dir_batch row, its dir_addr rows.
_Batch = tuple[tuple[Any, ...], list[tuple[Any, ...]]]


def prepare(r: Recipient) -> Prepared:
    """`r` as the directory stores it; pure (an address listed twice is kept once: first)."""
    addrs = r.addresses
    if len(addrs) > 1:
        first: dict[tuple[str, str], Address] = {}
        for a in addrs:
            first.setdefault((a.channel, a.address), a)
        addrs = tuple(first.values())
    prefs = (
        r.preferences.model_dump_json(exclude_defaults=True)
        if "preferences" in r.model_fields_set and r.preferences is not NO_PREFERENCES
        else "{}"
    )
    fields = (
        r.tenant, r.id, r.email, r.phone, r.locale, r.timezone,
        _DUMP(r.attributes) if r.attributes else "{}", prefs,
    )  # fmt: skip
    return fields, [
        (a.channel, a.address, a.platform, a.app_id, a.last_seen, _endpoint(a)) for a in addrs
    ]


def _batch_rows(p: Prepared, seq: int, partition: int, offset: int) -> _Batch:
    fields, addrs = p
    tenant, rid = fields[0], fields[1]
    return (seq, *fields, partition, offset), [
        (seq, tenant, rid, pos, *a) for pos, a in enumerate(addrs)
    ]


# One import chunk as `_Feed` hands it over: (its rows, the binary COPY data of its dir_batch
# rows, that of its dir_addr rows).
_Chunk = tuple[int, bytes, bytes]


def _copy_data(cursor: psycopg.Cursor[Any], types: tuple[str, ...], rows: Iterable[Any]) -> bytes:
    """`rows` as the data of one binary COPY of columns `types` (nothing is sent: a FileWriter)."""
    out = io.BytesIO()
    with psycopg.Copy(cursor, binary=True, writer=FileWriter(out)) as cp:
        cp.set_types(list(types))
        for row in rows:
            cp.write_row(row)
    return out.getvalue()


class _Feed:
    """An import's recipients, chunk by chunk, laid out and COPY-formatted on their own thread.

    The formatting is done here too, so the importing thread only sends bytes and waits on
    Postgres: reading the next chunk overlaps Postgres merging this one, and the two don't
    take turns on the GIL. `cursor` (never executed: its connection's adapters) formats.
    Bounded: at most two chunks wait. What reading the recipients raises is raised by the
    iteration. `close()` stops the thread (it drops what it would have handed on).
    """

    def __init__(
        self, rows: Iterable[Recipient | Prepared], size: int, cursor: psycopg.Cursor[Any]
    ) -> None:
        self._q: queue.Queue[_Chunk | BaseException | None] = queue.Queue(2)
        self._stop = threading.Event()
        self._cursor = cursor
        self._thread = threading.Thread(
            target=self._run, args=(rows, size), name="import-rows", daemon=True
        )
        self._thread.start()

    def _run(self, rows: Iterable[Recipient | Prepared], size: int) -> None:
        try:
            chunk: list[_Batch] = []
            for i, r in enumerate(rows, 1):
                chunk.append(_batch_rows(prepare(r) if isinstance(r, Recipient) else r, i, -1, -1))
                if len(chunk) >= size:
                    if not self._put(self._format(chunk)):
                        return
                    chunk = []
            if chunk and not self._put(self._format(chunk)):
                return
            self._put(None)
        except BaseException as exc:  # handed to the importing thread, which raises it
            self._put(exc)

    def _format(self, chunk: list[_Batch]) -> _Chunk:
        batch = _copy_data(self._cursor, _BATCH_TYPES, (row for row, _ in chunk))
        addrs = _copy_data(self._cursor, _ADDR_TYPES, (a for _, ad in chunk for a in ad))
        return len(chunk), batch, addrs

    def _put(self, item: _Chunk | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_Chunk]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
