"""What-if: judge the same events under two catalogs and report what would change."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from catalog.catalog import Catalog
from catalog.dryrun import Rendered, content_text, dry_run
from catalog.exceptions import CatalogError, RenderError

__all__ = ["Change", "DiffSummary", "diff_event", "format_change"]

Kind = Literal["added", "removed", "changed", "error"]
Key = tuple[str, str, str]  # rule id, recipient, channel
# Versions differ between catalogs by design; a change is what the recipient would see.
_IGNORED = {"rule_version", "template_version"}


@dataclass(frozen=True, slots=True)
class Change:
    """One notification that differs between the old and the new catalog for one event."""

    kind: Kind
    event_id: str
    event_type: str
    key: Key
    old: Rendered | None = None
    new: Rendered | None = None
    error: str = ""


@dataclass(slots=True)
class DiffSummary:
    """Counts over a replay."""

    events: int = 0
    undecodable: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("added", "removed", "changed", "error", "same"), 0)
    )


def _judge(
    catalog: Catalog, envelope: Mapping[str, Any], now: dt.datetime, locales: Sequence[str]
) -> dict[Key, Rendered] | str:
    try:
        items = dry_run(catalog, envelope, now, locales)
    except CatalogError as exc:
        return str(exc)
    return {(r.match.rule_id, r.match.recipient, r.match.channel): r for r in items}


def _comparable(item: Rendered) -> tuple[Any, ...]:
    def dump(c: Any) -> Any:
        return str(c) if isinstance(c, RenderError) else c.model_dump()

    return (
        item.match.model_dump(exclude=_IGNORED),
        {loc: dump(c) for loc, c in item.content.items()},
    )


def diff_event(
    old: Catalog,
    new: Catalog,
    envelope: Mapping[str, Any],
    now: dt.datetime,
    locales: Sequence[str] = (),
    summary: DiffSummary | None = None,
) -> list[Change]:
    """The changes for one event (unchanged notifications are only counted in `summary`)."""
    event_id, event_type = str(envelope.get("id")), str(envelope.get("type"))
    before, after = _judge(old, envelope, now, locales), _judge(new, envelope, now, locales)
    changes: list[Change] = []
    same = 0
    if isinstance(before, str) or isinstance(after, str):
        if before != after:
            side = "old" if isinstance(before, str) else "new"
            message = before if isinstance(before, str) else str(after)
            changes.append(
                Change("error", event_id, event_type, ("", "", ""), error=f"{side}: {message}")
            )
    else:
        for key in [*before, *(k for k in after if k not in before)]:
            a, b = before.get(key), after.get(key)
            if a is None:
                changes.append(Change("added", event_id, event_type, key, new=b))
            elif b is None:
                changes.append(Change("removed", event_id, event_type, key, old=a))
            elif _comparable(a) != _comparable(b):
                changes.append(Change("changed", event_id, event_type, key, old=a, new=b))
            else:
                same += 1
    if summary is not None:
        summary.events += 1
        summary.counts["same"] += same
        for change in changes:
            summary.counts[change.kind] += 1
    return changes


def _lines(item: Rendered | None) -> list[str]:
    if item is None:
        return ["(none)"]
    m = item.match
    out = [f"rule {m.rule_id} v{m.rule_version}, template {m.template_id}@{m.template_version}"]
    out.append(f"priority {m.priority}, category {m.category}")
    for locale, content in item.content.items():
        out.append(f"-- locale {locale}")
        out.extend(content_text(content).splitlines())
    return out


def format_change(change: Change, width: int = 160) -> str:
    """A change as a header and the old and new content side by side (`|` marks differences)."""
    rule, recipient, channel = change.key
    head = f"{change.kind.upper()} event {change.event_id} ({change.event_type})"
    if change.kind == "error":
        return f"{head}: {change.error}"
    head += f": {recipient} via {channel}, rule {rule}"
    col = max(20, (width - 3) // 2)
    rows = [f"{'OLD':<{col}}   NEW"]
    left, right = _lines(change.old), _lines(change.new)
    for a, b in itertools.zip_longest(left, right, fillvalue=""):
        mark = " " if a == b else "|"
        a = a if len(a) <= col else a[: col - 1] + "…"
        rows.append(f"{a:<{col}} {mark} {b}")
    return "\n".join([head, *rows])
