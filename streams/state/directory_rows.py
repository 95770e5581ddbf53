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
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.copy import FileWriter

from schemas.recipient import NO_PREFERENCES, Address, Recipient, RecipientChange

__all__ = [
    "IMPORT_CHUNK", "NO_PREFERENCES", "Change", "Prepared", "change_target", "live_addresses",
    "prepare",
]  # fmt: skip

# One record of the recipients topic as the stage hands it over: (partition, offset, the
# decoded change or None for a tombstone, the record key `<tenant>/<id>`).
Change = tuple[int, int, RecipientChange | None, bytes]

# The batch table every write goes through: one row per recipient (`seq` its place in the
# batch), its addresses inline (a JSON array, and the tokens a push service may report dead),
# filled by one COPY.
_BATCH_COLUMNS = (
    "seq", "tenant", "id", "email", "phone", "locale", "timezone", "attributes",
    "preferences", "src_partition", "src_offset", "addresses", "tokens",
)  # fmt: skip
_BATCH_TYPES = (
    "int8", "text", "text", "text", "text", "text", "text", "text", "text", "int4", "int8",
    "text", "text",
)  # fmt: skip
_TEMP = (
    "create temp table if not exists dir_batch ("
    " seq bigint not null, tenant text not null, id text not null, email text, phone text,"
    " locale text, timezone text, attributes text not null, preferences text not null,"
    " src_partition integer not null, src_offset bigint not null, addresses text not null,"
    " tokens text not null) on commit delete rows"
)
_COPY = f"copy dir_batch ({', '.join(_BATCH_COLUMNS)}) from stdin (format binary)"

_FIELDS = "email, phone, locale, timezone, attributes, preferences, addresses, tokens"
_VALUES = (
    "tenant, id, email, phone, locale, timezone, attributes::jsonb, preferences::jsonb, "
    "addresses::json, tokens::text[], src_partition, src_offset"
)
_SET = (
    "email = excluded.email, phone = excluded.phone, locale = excluded.locale, "
    "timezone = excluded.timezone, attributes = excluded.attributes, "
    "preferences = excluded.preferences, addresses = excluded.addresses, "
    "tokens = excluded.tokens, updated_at = now()"
)


def _upsert(source: str, *, from_topic: bool) -> str:
    """The upsert of every recipient in `source` (a dir_batch-shaped relation); its row
    count is the recipients written.

    From the topic: only where the change is newer than the row (another partition counts
    as newer: the topic was repartitioned, or the row was imported), moving the row's
    position. From an import: always, keeping the row's topic position, so an older topic
    record replayed later still can't overwrite what was imported after it.
    """
    head = (
        f"insert into recipients as r (tenant, id, {_FIELDS}, src_partition, src_offset) "
        f"select {_VALUES} from {source} s on conflict (tenant, id) do update set {_SET}"
    )
    if not from_topic:
        return head
    return (
        f"{head}, src_partition = excluded.src_partition, src_offset = excluded.src_offset "
        "where r.src_partition <> excluded.src_partition or r.src_offset < excluded.src_offset"
    )


def _insert_new(source: str) -> str:
    """The plain insert of every recipient in `source`, for an import chunk of new ones.

    Half the cost of `_upsert`'s ON CONFLICT path per row; a key that exists already (or
    is in `source` twice) raises UniqueViolation, and the chunk goes the upsert's way.
    """
    return (
        f"insert into recipients (tenant, id, {_FIELDS}, src_partition, src_offset) "
        f"select {_VALUES} from {source}"
    )


# An import chunk listing a recipient twice: only its last one counts.
_DEDUPED = "(select distinct on (tenant, id) * from dir_batch order by tenant, id, seq desc)"

_DELETE = (
    "delete from recipients r "
    "using unnest(%s::text[], %s::text[], %s::int[], %s::bigint[]) as d(tenant, id, p, o) "
    "where r.tenant = d.tenant and r.id = d.id and (r.src_partition <> d.p or r.src_offset < d.o)"
)

# Each recipient as JSON, and the tokens of its addresses a push service reported dead
# (`dead_tokens`: [[channel, token, last reported], …], or null when none is), for
# `live_addresses` to leave out: a dead address is hidden on every read rather than deleted
# from every row that lists it (no index from token to recipient to maintain on each write).
_LOOKUP = (
    "select json_build_object('tenant', r.tenant, 'id', r.id, 'email', r.email, "
    "'phone', r.phone, 'locale', r.locale, 'timezone', r.timezone, "
    "'attributes', r.attributes, 'preferences', r.preferences, "
    "'addresses', r.addresses)::text, "
    "case when cardinality(r.tokens) > 0 then (select json_agg(json_build_array("
    "d.channel, d.token, d.last_seen_at))::text from dead_tokens d "
    "where d.token = any(r.tokens)) end "
    "from unnest(%s::text[], %s::text[]) as k(tenant, id) "
    "join recipients r on r.tenant = k.tenant and r.id = k.id"
)

# Rows per COPY of an import: big enough that a round trip is nothing, small enough that
# reading the next chunk overlaps Postgres merging this one, and memory stays bounded.
IMPORT_CHUNK = 20_000


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
# One recipient's row of the batch table (`_BATCH_COLUMNS`).
_Batch = tuple[Any, ...]


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


def _array_item(token: str, dumped: str | None = None) -> str:
    # One element of a Postgres array literal, quoted. A JSON dump with no backslash has no
    # `"`, `\\` or control character inside (ensure_ascii: nor anything non-ASCII): it is
    # already one.
    dumped = dumped or _DUMP(token)
    if "\\" not in dumped:
        return dumped
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _batch_rows(p: Prepared, seq: int, partition: int, offset: int) -> _Batch:
    """The dir_batch row of one recipient: its fields, its addresses as one JSON array (each
    as the Address model reads it back, None fields left out), and, as an array literal,
    the tokens a push service would report dead (push: the token; webpush: the endpoint)."""
    fields, addrs = p
    if not addrs:
        return (seq, *fields, partition, offset, "[]", "{}")
    items: list[str] = []
    tokens: list[str] = []
    for channel, address, platform, app_id, last_seen, endpoint in addrs:
        dumped = _DUMP(address)
        item = f'{{"channel":"{channel}","address":{dumped}'
        if platform is not None:
            item += f',"platform":"{platform}"'
        if app_id is not None:
            item += f',"app_id":{_DUMP(app_id)}'
        if last_seen is not None:
            item += f',"last_seen":"{last_seen.isoformat()}"'
        items.append(item + "}")
        if endpoint is not None:
            tokens.append(_array_item(endpoint))
        elif channel == "push" or channel == "webpush":
            tokens.append(_array_item(address, dumped))
    return (seq, *fields, partition, offset, f"[{','.join(items)}]", f"{{{','.join(tokens)}}}")


def live_addresses(r: Recipient, dead: Iterable[tuple[str, str, datetime]]) -> Recipient:
    """`r` without the addresses `dead` ((channel, token, last reported dead)) names; pure.

    An address is dead when its channel and token (webpush: its endpoint, or its whole
    subscription JSON) match a report and it was not seen after that report (`last_seen`
    later: the app was reinstalled and the token reissued).
    """
    reports: dict[tuple[str, str], datetime] = {}
    for channel, token, at in dead:
        key = (channel, token)
        reports[key] = max(at, reports.get(key, at))

    def alive(a: Address) -> bool:
        seen = a.last_seen
        if seen is not None and seen.tzinfo is None:  # a producer's naive time: read as UTC
            seen = seen.replace(tzinfo=UTC)
        for token in (a.address, _endpoint(a)):
            at = reports.get((a.channel, token)) if token is not None else None
            if at is not None and (seen is None or seen <= at):
                return False
        return True

    kept = tuple(a for a in r.addresses if alive(a))
    return r if len(kept) == len(r.addresses) else r.model_copy(update={"addresses": kept})


# One import chunk as `_Feed` hands it over: (its rows, the binary COPY data of its dir_batch
# rows).
_Chunk = tuple[int, bytes]


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
        return len(chunk), _copy_data(self._cursor, _BATCH_TYPES, chunk)

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
