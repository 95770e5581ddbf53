"""Recipients from a file, for `tidings recipients import` and `publish`: CSV or JSON Lines.

CSV (`.csv`): a header line naming columns among `CSV_COLUMNS`, `id` required, in any order;
an empty cell is an absent value. `attributes` and `preferences` are JSON objects,
`push_tokens` is `fcm:TOKEN|apns:TOKEN|…`, `addresses` a JSON list of address objects
(`{"channel": "webpush", "address": "…"}`). JSON Lines (`.jsonl`, `.ndjson`): one
`Recipient` JSON object per line; blank lines are skipped.

Every row is checked as the directory stores it (the bounds of `schemas.recipient`) plus the
email and phone rules of the catalog (`catalog.cel.is_email`, `is_phone`). Pure apart from
reading the file; nothing here touches Postgres or Kafka.
"""

from __future__ import annotations

import csv
import json
import operator
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from catalog import Catalog
from catalog.cel import is_email, is_phone
from catalog.preferences import unknown_defaults, unknown_names
from schemas.recipient import (
    MAX_ADDRESSES,
    MAX_ATTRIBUTES_BYTES,
    MAX_ID_LENGTH,
    TENANT_DEFAULTS,
    Preferences,
    Recipient,
    RecipientChange,
    TenantDefaults,
    recipient_key,
    tenant_defaults_key,
)
from streams.state.directory_rows import NO_PREFERENCES, Prepared, change_target, prepare

__all__ = [
    "CSV_COLUMNS",
    "count_lines",
    "decode_change",
    "delete_change",
    "describe",
    "parse_csv_row",
    "parse_json_line",
    "prepare_csv_row",
    "read_prepared",
    "read_recipients",
    "tenant_defaults_change",
    "upsert_change",
]

CSV_COLUMNS = (
    "tenant", "id", "email", "phone", "locale", "timezone", "attributes", "preferences",
    "push_tokens", "addresses",
)  # fmt: skip
_PLAIN = ("tenant", "id", "email", "phone", "locale", "timezone")
_PLATFORMS = ("fcm", "apns")
# One CSV cell at most: attributes are bounded at 16 KiB, 100 addresses of 4 KiB each.
_MAX_CELL = 1024 * 1024


def describe(exc: ValidationError) -> str:
    """One line naming every failing field and why (never the value, it may be personal)."""
    parts = []
    for e in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _check(r: Recipient) -> Recipient:
    if r.email is not None and not is_email(r.email):
        raise ValueError("email: not an email address (name@domain.tld)")
    if r.phone is not None and not is_phone(r.phone):
        raise ValueError("phone: not an E.164 number (+ and 7 to 15 digits, e.g. +14155550123)")
    return r


def _json_cell(name: str, text: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: not valid JSON ({exc.msg} at character {exc.pos})") from exc
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply") from None
    if not isinstance(value, kind):
        want = "an object" if kind is dict else "a list"
        raise ValueError(f"{name}: must be {want} in JSON, got {type(value).__name__}")
    return value


def _push_tokens(text: str) -> list[dict[str, str]]:
    out = []
    for item in text.split("|"):
        platform, sep, token = item.strip().partition(":")
        if not sep or platform not in _PLATFORMS or not token:
            raise ValueError(
                f"push_tokens: {item[:40]!r} is not PLATFORM:TOKEN with PLATFORM one of "
                f"{', '.join(_PLATFORMS)} (e.g. fcm:abc123|apns:def456)"
            )
        out.append({"channel": "push", "address": token, "platform": platform})
    return out


def parse_csv_row(row: dict[str, str]) -> Recipient:
    """The recipient of one CSV row (column → cell); raises ValueError naming what is wrong."""
    data: dict[str, Any] = {k: row[k] for k in _PLAIN if row.get(k)}
    if row.get("attributes"):
        data["attributes"] = _json_cell("attributes", row["attributes"], dict)
    if row.get("preferences"):
        data["preferences"] = _json_cell("preferences", row["preferences"], dict)
    else:
        data["preferences"] = NO_PREFERENCES  # shared: building a default costs a lot
    addresses: list[Any] = _push_tokens(row["push_tokens"]) if row.get("push_tokens") else []
    if row.get("addresses"):
        addresses += _json_cell("addresses", row["addresses"], list)
    if addresses:
        data["addresses"] = addresses
    try:
        return _check(Recipient.model_validate(data))
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None


def parse_json_line(text: str | bytes) -> Recipient:
    """The recipient of one JSON Lines line; raises ValueError naming what is wrong."""
    try:
        return _check(Recipient.model_validate_json(text))
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None


T = TypeVar("T")


def _by_name(
    parse: Callable[[dict[str, str]], T],
) -> Callable[[list[str]], Callable[[list[str]], T]]:
    """`parse` of a row as a dict (column → cell), for `_csv_rows`."""

    def make(header: list[str]) -> Callable[[list[str]], T]:
        return lambda cells: parse(dict(zip(header, cells, strict=True)))

    return make


def _csv_rows(
    path: Path, make: Callable[[list[str]], Callable[[list[str]], T]]
) -> Iterator[tuple[int, T | str]]:
    """Each row of CSV `path` parsed by `make(header)` (which takes the row's cells)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        unknown = [h for h in header if h not in CSV_COLUMNS]
        if unknown or "id" not in header or len(set(header)) != len(header):
            raise ValueError(
                f"{path}:1: the header must name distinct columns among "
                f"{', '.join(CSV_COLUMNS)}, `id` among them"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        parse, width = make(header), len(header)
        last = reader.line_num
        while True:
            line = last + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last = reader.line_num
                yield line, f"not a valid CSV record ({exc})"
                continue
            last = reader.line_num
            if not cells:
                continue  # a blank line
            if len(cells) != width:
                yield line, f"{len(cells)} fields, but the header names {width}"
                continue
            if max(map(len, cells)) > _MAX_CELL:
                yield line, f"a cell is longer than {_MAX_CELL} characters"
                continue
            try:
                yield line, parse(cells)
            except ValueError as exc:
                yield line, str(exc)


def _jsonl_rows(path: Path, parse: Callable[[bytes], T]) -> Iterator[tuple[int, T | str]]:
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield line, parse(raw)
            except ValueError as exc:
                yield line, str(exc)


def read_recipients(path: Path) -> Iterator[tuple[int, Recipient | str]]:
    """Each row of `path` as (line, recipient), or (line, what is wrong with it), in order.

    The format follows the suffix: `.csv`, or `.jsonl` / `.ndjson`. Raises ValueError for
    another suffix or a CSV header naming unknown columns (`FILE:1: …`), OSError when the
    file can't be read. Lazy: one row in memory at a time.
    """
    if _format(path) == "csv":
        return _csv_rows(path, _by_name(parse_csv_row))
    return _jsonl_rows(path, parse_json_line)


def read_prepared(path: Path) -> Iterator[tuple[int, Prepared | str]]:
    """`read_recipients`, each good row as the directory stores it (`Directory.import_rows`
    takes these): the same rows refused with the same reasons, CSV several times faster."""
    if _format(path) == "csv":
        return _csv_rows(path, _FastCsv)
    return _jsonl_rows(path, lambda raw: prepare(parse_json_line(raw)))


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_CELL + 1))
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ValueError(f"{path}: unknown format {suffix or '(no suffix)'!r}: use .csv or .jsonl")


# The bounds of schemas.recipient that the fast path checks itself (a unit test keeps the two
# in step: tests/unit/streams/state/test_recipient_rows.py).
_MAX_LEN = {"email": 320, "phone": 32, "locale": 35, "timezone": 64}
_MAX_ADDRESS = 4096
_DUMP = json.JSONEncoder(separators=(",", ":"), default=str).encode


def prepare_csv_row(row: dict[str, str]) -> Prepared:
    """`prepare(parse_csv_row(row))`, without building a Recipient for the common rows.

    A row without `addresses`, all within bounds, is checked and laid out here (its
    preferences by the model itself); any other row (addresses, anything that fails a
    check) goes the full way, so what is refused, and why, is exactly what `parse_csv_row` says.
    Raises ValueError naming what is wrong. (`read_prepared` uses one `_FastCsv` per file.)
    """
    return _FastCsv(list(row))(list(row.values()))


# A cached cell that the fast path can't lay out (the full way says why): no JSON dump is "".
_SLOW = ""
# Distinct attributes / preferences cells remembered per file (their layout only depends on
# the cell's text; files repeat a few shapes: `{"plan": "pro"}`, `{"categories": [...]}`).
_CACHED_CELLS = 4096


class _FastCsv:
    """`prepare_csv_row` of one file's rows, given as lists of cells in the header's order.

    The cells are picked by position (no dict per row), and the layout of an attributes or
    preferences cell is remembered by its text (a bounded cache: pydantic validating a
    preferences object costs more than the rest of a row). Pure.
    """

    def __init__(self, header: list[str]) -> None:
        self._header = header
        absent = len(header)  # the position of the "" appended to every row's cells
        at = {name: i for i, name in enumerate(header)}
        self._pick = operator.itemgetter(
            *(at.get(name, absent) for name in (*_PLAIN, "attributes", "preferences",
                                                "push_tokens", "addresses"))
        )  # fmt: skip
        self._attrs: dict[str, str] = {}
        self._prefs: dict[str, str] = {}

    def __call__(self, cells: list[str]) -> Prepared:
        fast = self._fast([*cells, ""])
        if fast is not None:
            return fast
        return prepare(parse_csv_row(dict(zip(self._header, cells, strict=True))))

    def _fast(self, cells: list[str]) -> Prepared | None:
        tenant, rid, email, phone, locale, tz, attrs, prefs, tokens, addresses = self._pick(cells)
        if addresses or len(tenant) > MAX_ID_LENGTH or not 0 < len(rid) <= MAX_ID_LENGTH:
            return None
        if email and (len(email) > _MAX_LEN["email"] or not is_email(email)):
            return None
        if phone and (len(phone) > _MAX_LEN["phone"] or not is_phone(phone)):
            return None
        if len(locale) > _MAX_LEN["locale"] or len(tz) > _MAX_LEN["timezone"]:
            return None
        if attrs:
            attrs = _cached(self._attrs, attrs, _attributes)
            if not attrs:  # _SLOW
                return None
        if prefs:
            prefs = _cached(self._prefs, prefs, _preferences)
            if not prefs:  # _SLOW
                return None
        addrs: list[tuple[Any, ...]] = []
        if tokens:
            items = tokens.split("|")
            if len(items) > MAX_ADDRESSES:
                return None
            seen: set[str] = set()
            for item in items:
                platform, sep, token = item.strip().partition(":")
                if not sep or not token or platform not in _PLATFORMS or len(token) > _MAX_ADDRESS:
                    return None
                if token not in seen:
                    seen.add(token)
                    addrs.append(("push", token, platform, None, None, None))
        fields = (tenant, rid, email or None, phone or None, locale or None, tz or None,
                  attrs or "{}", prefs or "{}")  # fmt: skip
        return fields, addrs


def _cached(cache: dict[str, str], cell: str, lay_out: Callable[[str], str]) -> str:
    got = cache.get(cell)
    if got is None:
        got = lay_out(cell)
        if len(cache) >= _CACHED_CELLS:
            cache.clear()
        cache[cell] = got
    return got


def _attributes(cell: str) -> str:
    """An attributes cell as stored (compact JSON), or _SLOW."""
    try:
        obj = json.loads(cell)
    except (ValueError, RecursionError):
        return _SLOW
    if not isinstance(obj, dict):
        return _SLOW
    if not obj:
        return "{}"
    dumped = _DUMP(obj)
    return dumped if len(dumped) <= MAX_ATTRIBUTES_BYTES else _SLOW


def _preferences(cell: str) -> str:
    """A preferences cell as stored (validated by the model), or _SLOW."""
    try:
        p = Preferences.model_validate_json(cell)
    except ValueError:  # pydantic's ValidationError (bad JSON included)
        return _SLOW
    return p.model_dump_json(exclude_defaults=True)


def count_lines(path: Path) -> int:
    """How many lines `path` has (for a progress bar); reads it once, in 1 MiB blocks."""
    n, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def upsert_change(r: Recipient, *, source: str = "tidings-cli") -> RecipientChange:
    """The `tidings.recipient.upserted` record carrying `r` (key it `r.key()`)."""
    return RecipientChange(
        id=str(uuid.uuid4()), source=source, type="tidings.recipient.upserted",
        data=r.model_dump(mode="json", exclude_defaults=True) | {"id": r.id},
    )  # fmt: skip


def tenant_defaults_change(d: TenantDefaults, *, source: str = "tidings-cli") -> RecipientChange:
    """The `tidings.tenant.defaults` record carrying `d` (key it `tenant_defaults_key`)."""
    return RecipientChange(
        id=str(uuid.uuid4()), source=source, type=TENANT_DEFAULTS,
        time=datetime.now(UTC), data=d.model_dump(mode="json"),
    )  # fmt: skip


def delete_change(tenant: str, rid: str, *, source: str = "tidings-cli") -> RecipientChange:
    """The `tidings.recipient.deleted` record erasing (tenant, rid)."""
    return RecipientChange(
        id=str(uuid.uuid4()), source=source, type="tidings.recipient.deleted",
        data={"tenant": tenant, "id": rid},
    )  # fmt: skip


def decode_change(
    key: bytes | None, value: bytes | None, catalog: Catalog | None = None
) -> RecipientChange | None:
    """The change one recipients record carries, validated; None for a tombstone. Pure.

    Raises ValueError (pydantic's ValidationError among them) naming what is wrong: bad
    JSON, a field or bound that fails, an unknown type, no key, a key other than
    `<tenant>/<id>` of the data (compaction keeps the last record per key, so a key that
    names another recipient would erase the wrong one), or, with a `catalog`, preferences
    naming a category or rule it doesn't have (with the valid ones).
    """
    if key is None:
        raise ValueError("the record has no key: key it <tenant>/<id> (compaction needs it)")
    if value is None:
        change_target(None, key)  # a tombstone: its key must name a recipient
        return None
    change = RecipientChange.model_validate_json(value)
    if change.type == TENANT_DEFAULTS:
        d = change.tenant_defaults()
        if catalog is not None:
            unknown = unknown_defaults(d.preferences, d.required_categories,
                                       catalog.categories(), catalog.rule_ids())  # fmt: skip
            if unknown:
                raise ValueError(f"{unknown} (catalog {catalog.version})")
        if tenant_defaults_key(d.tenant) != key:
            raise ValueError(
                f"record key {key[:80]!r} doesn't match its data: key a tenant's defaults "
                f"{tenant_defaults_key(d.tenant)[:80]!r} (<tenant>/)"
            )
        return change
    if change.type == "tidings.recipient.upserted":
        r = change.recipient()
        target = (r.tenant, r.id)
        if catalog is not None:
            unknown = unknown_names(r.preferences, catalog.categories(), catalog.rule_ids())
            if unknown:
                raise ValueError(f"{unknown} (catalog {catalog.version})")
    else:
        target = change.target()
    if recipient_key(*target) != key:
        raise ValueError(
            f"record key {key[:80]!r} doesn't match its data: key it "
            f"{recipient_key(*target)[:80]!r} (<tenant>/<id>)"
        )
    return change
