"""`tidings recipients import FILE | show TENANT/ID | publish FILE`: the directory by hand.

`import` checks every row (streams/state/recipient_rows.py), reports each bad one as
`FILE:LINE: what is wrong` on stderr and skips it, and writes the good ones in one
transaction (nothing is visible until all are in; a Postgres refusal writes nothing). Exit
1 if any row was refused or the import failed, 0 otherwise. `publish` produces the rows as
`tidings.recipient.upserted` records on the recipients topic instead, for the recipients
stage to apply (docs/recipients.md).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO, TypeVar

from confluent_kafka import KafkaException

from catalog import Catalog, CatalogLoadError, load_catalog
from catalog.preferences import unknown_names
from schemas.recipient import Preferences, Recipient
from schemas.settings import TidingsSettings
from streams.cli.publish import ChangePublisher
from streams.exceptions import DependencyDown, FatalStageError
from streams.state.directory import Directory, DirectoryRefused
from streams.state.directory_rows import Prepared
from streams.state.recipient_rows import count_lines, read_prepared, read_recipients, upsert_change

__all__ = ["register"]

_MAX_REMEMBERED = 10_000  # distinct preferences whose check is remembered
_MAX_SHOWN = 1000  # refused rows reported one by one; past this, only counted
T = TypeVar("T")


class _Bar:
    """A one-line progress bar on a terminal (nothing when stderr isn't one)."""

    def __init__(self, total: int, out: TextIO | None = None) -> None:
        self._total = max(1, total)
        self._out = out = out or sys.stderr
        self._tty = out.isatty()
        self._t0 = self._last = time.monotonic()
        self._drawn = False

    def update(self, line: int, rows: int, *, force: bool = False, note: str = "") -> None:
        now = time.monotonic()
        if not self._tty or (not force and now - self._last < 0.1):
            return
        self._last = now
        share = min(1.0, line / self._total)
        filled = int(share * 30)
        rate = rows / max(now - self._t0, 1e-9)
        self._out.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {rows:,} rows "
            f"{rate:,.0f} rows/s{note}\x1b[K"
        )
        self._out.flush()
        self._drawn = True

    def say(self, text: str) -> None:
        """A line of its own (an error), above the bar."""
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._drawn = False
        print(text, file=self._out)

    def done(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._drawn = False


class _Names:
    """Refuses rows whose preferences name a category or rule the catalog doesn't have."""

    def __init__(self, catalog: Catalog) -> None:
        self._categories = catalog.categories()
        self._rules = catalog.rule_ids()
        self._version = catalog.version
        self._seen: dict[str, str | None] = {}  # preferences JSON → what is wrong with it

    def recipient(self, r: Recipient) -> str | None:
        """What is wrong with `r`'s preferences, or None."""
        return self._problem(r.preferences.model_dump_json(), r.preferences)

    def prepared(self, p: Prepared) -> str | None:
        """What is wrong with a Prepared row's preferences (its stored JSON), or None."""
        text = p[0][7]
        return None if text == "{}" else self._problem(text, None)

    def _problem(self, text: str, prefs: Preferences | None) -> str | None:
        if text in self._seen:  # a file has few distinct preferences: check each once
            return self._seen[text]
        p = prefs if prefs is not None else Preferences.model_validate_json(text)
        bad = unknown_names(p, self._categories, self._rules)
        problem = f"{bad} (catalog {self._version})" if bad else None
        if len(self._seen) < _MAX_REMEMBERED:
            self._seen[text] = problem
        return problem


def _names(s: TidingsSettings) -> _Names | None:
    """The catalog's names from `catalog.path`, or None (with a note) when it can't load."""
    if s.catalog.follow_topic:
        print("note: the catalog comes from a topic here: preferences are not checked "
              "against its categories and rules (the recipients stage checks them)",
              file=sys.stderr)  # fmt: skip
        return None
    try:
        return _Names(load_catalog(s.catalog.path))
    except CatalogLoadError as exc:
        print(f"note: catalog.path {s.catalog.path} does not load ({exc}); preferences are not "
              "checked against its categories and rules", file=sys.stderr)  # fmt: skip
        return None


class _Rows:
    """The good rows of a file (to hand on), reporting and counting the bad ones.

    Iterating yields Recipients; `prepared()` yields them as the directory stores them.
    """

    def __init__(self, path: Path, bar: _Bar, names: _Names | None = None) -> None:
        self.path = path
        self.bar = bar
        self.names = names  # the catalog's categories and rules, to check preferences by
        self.refused = 0
        self.rows = 0
        self.lines = array("q")  # the file line of each row handed on, to name a refused one

    def __iter__(self) -> Iterator[Recipient]:
        names = self.names.recipient if self.names is not None else None
        return self._good(read_recipients(self.path), names)

    def prepared(self) -> Iterator[Prepared]:
        names = self.names.prepared if self.names is not None else None
        return self._good(read_prepared(self.path), names)

    def _good(
        self, rows: Iterator[tuple[int, T | str]], names: Callable[[T], str | None] | None
    ) -> Iterator[T]:
        line = 0
        for line, row in rows:
            r = row if names is None or isinstance(row, str) else (names(row) or row)
            if isinstance(r, str):
                self.refused += 1
                if self.refused <= _MAX_SHOWN:
                    self.bar.say(f"{self.path}:{line}: {r}")
                elif self.refused == _MAX_SHOWN + 1:
                    self.bar.say(f"{self.path}: more refused rows; only counted from here on")
                continue
            self.rows += 1
            self.lines.append(line)
            self.bar.update(line, self.rows)
            yield r
        self.bar.update(line, self.rows, force=True, note="; writing to the directory…")

    def line_of(self, row: int | None) -> str:
        """`FILE:LINE: ` of the `row`-th row handed on, if known."""
        if row is None or not 1 <= row <= len(self.lines):
            return ""
        return f"{self.path}:{self.lines[row - 1]}: "


def _open(args: argparse.Namespace, s: TidingsSettings) -> tuple[_Rows, _Bar] | None:
    path = Path(args.file)
    try:
        bar = _Bar(count_lines(path))
        read_recipients(path)  # the suffix is checked now, before anything connects
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return _Rows(path, bar, _names(s)), bar


def _import(args: argparse.Namespace, s: TidingsSettings) -> int:
    opened = _open(args, s)
    if opened is None:
        return 1
    rows, bar = opened
    directory = Directory(s.postgres.conninfo(), name="import")
    # The import keeps two chunks of rows alive (tens of thousands of tuples): without this
    # the cyclic GC rescans every object loaded so far, again and again (a third of the
    # reading time). An import makes no garbage cycles worth collecting meanwhile.
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    t0 = time.monotonic()
    try:
        n = directory.import_rows(rows.prepared())
    except DirectoryRefused as exc:
        bar.done()
        print(f"error: {rows.line_of(exc.row)}{exc}; fix the row and import again",
              file=sys.stderr)  # fmt: skip
        return 1
    except (DependencyDown, FatalStageError, ValueError, OSError) as exc:
        bar.done()
        print(f"error: {exc}; nothing was imported", file=sys.stderr)
        return 1
    finally:
        directory.close()
        gc.set_threshold(*threshold)  # as it was (a test may call this in its own process)
        gc.unfreeze()
    took = time.monotonic() - t0
    bar.done()
    print(
        f"imported {n:,} recipient(s) from {rows.path} in {took:.1f} s "
        f"({n / max(took, 1e-9):,.0f} rows/s); {rows.refused:,} row(s) refused"
    )
    return 1 if rows.refused else 0


def _show(args: argparse.Namespace, s: TidingsSettings) -> int:
    tenant, sep, rid = str(args.who).partition("/")
    if not sep:
        tenant, rid = "", tenant
    directory = Directory(s.postgres.conninfo(), name="show")
    try:
        found = directory.lookup([(tenant, rid)])
    except (DependencyDown, FatalStageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        directory.close()
    r = found.get((tenant, rid))
    if r is None:
        print(f"error: no recipient {rid!r} of tenant {tenant!r} in the directory",
              file=sys.stderr)  # fmt: skip
        return 1
    print(r.model_dump_json(indent=2))
    return 0


def _publish(args: argparse.Namespace, s: TidingsSettings) -> int:
    opened = _open(args, s)
    if opened is None:
        return 1
    rows, bar = opened
    try:
        out = ChangePublisher(s)
    except (FatalStageError, KafkaException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    try:
        for r in rows:
            out.send(r.key(), upsert_change(r).model_copy(update={"time": now}))
    except (ValueError, OSError, KafkaException) as exc:
        bar.done()
        print(f"error: {exc}; {out.sent} record(s) produced before it", file=sys.stderr)
        out.finish(30)
        return 1
    problem = out.finish()
    bar.done()
    if problem:
        print(f"error: {problem}; publish them again (upserts are idempotent)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"published {out.sent:,} upsert(s) to {out.topic}; {rows.refused:,} row(s) refused")
    return 1 if rows.refused else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `recipients import | show | publish` to `sub`."""
    rec = sub.add_parser("recipients", help="import, show and publish directory recipients")
    rsub = rec.add_subparsers(dest="recipients_command", required=True)
    imp = rsub.add_parser(
        "import",
        help="load FILE.csv or FILE.jsonl into the directory in one transaction",
        description="Check every row, report bad ones as FILE:LINE: what is wrong, and write "
        "the good ones in one transaction. Exit 1 if any row was refused. CSV columns: "
        "tenant, id, email, phone, locale, timezone, attributes (JSON), preferences (JSON), "
        "push_tokens (fcm:TOKEN|apns:TOKEN), addresses (JSON list); docs/recipients.md.",
    )
    imp.add_argument("file", help="a .csv or .jsonl file")
    imp.set_defaults(handler=_import)
    show = rsub.add_parser("show", help="print one stored recipient as JSON")
    show.add_argument("who", metavar="TENANT/ID", help="`acme/u-1`; `u-1` alone: no tenant")
    show.set_defaults(handler=_show)
    pub = rsub.add_parser(
        "publish",
        help="produce FILE's rows as upserts on the recipients topic (the stage applies them)",
    )
    pub.add_argument("file", help="a .csv or .jsonl file")
    pub.set_defaults(handler=_publish)
