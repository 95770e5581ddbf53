"""Dry run: the notifications one event would produce, fully rendered per locale; sends nothing."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from catalog.catalog import Catalog
from catalog.exceptions import RenderError
from catalog.models import Match
from catalog.templates import DEFAULT_LOCALE
from schemas.content import Content

__all__ = ["Rendered", "content_text", "dry_run", "format_rendered", "locales_for"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One match and its content per locale (a RenderError where rendering failed)."""

    match: Match
    content: dict[str, Content | RenderError] = field(default_factory=dict)


def locales_for(catalog: Catalog, match: Match, wanted: Sequence[str] = ()) -> list[str]:
    """`wanted`, else every locale the template has for the channel plus the match's own."""
    if wanted:
        return list(dict.fromkeys(wanted))
    found = list(catalog.templates.locales(match.template_id, match.channel))
    if match.locale and match.locale.lower().replace("_", "-") not in found:
        found.append(match.locale)
    return found or [DEFAULT_LOCALE]


def dry_run(
    catalog: Catalog,
    envelope: Mapping[str, Any],
    now: dt.datetime,
    locales: Sequence[str] = (),
) -> list[Rendered]:
    """Evaluate `envelope` and render every match; raises EventError, RuleEvaluationError."""
    out: list[Rendered] = []
    for match in catalog.evaluate(envelope, now):
        rendered = Rendered(match)
        for locale in locales_for(catalog, match, locales):
            try:
                rendered.content[locale] = catalog.render_content(
                    match.template_id,
                    match.channel,
                    {"recipient": match.recipient, **match.variables},
                    None if locale == DEFAULT_LOCALE else locale,
                )
            except RenderError as exc:
                rendered.content[locale] = exc
        out.append(rendered)
    return out


def content_text(content: Content | RenderError) -> str:
    """A readable, multi-line form of rendered content (or of the error)."""
    if isinstance(content, RenderError):
        return f"RENDER ERROR: {content}"
    lines: list[str] = []
    for name, value in content.model_dump().items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, indent=2, ensure_ascii=False)
        else:
            text = str(value)
        if "\n" in text.rstrip("\n"):
            lines.append(f"{name}:")
            lines.extend(f"  | {line}" for line in text.rstrip("\n").splitlines())
        else:
            lines.append(f"{name}: {text.rstrip()}")
    return "\n".join(lines)


def format_rendered(items: Iterable[Rendered]) -> str:
    """The dry-run report: one block per notification, one sub-block per locale."""
    blocks: list[str] = []
    for item in items:
        m = item.match
        head = (
            f"== {m.recipient} ({m.recipient_kind}) via {m.channel}: rule {m.rule_id} "
            f"v{m.rule_version}, template {m.template_id}@{m.template_version}, "
            f"priority {m.priority}, category {m.category}"
        )
        extra = []
        if m.fallback_channels:
            extra.append(f"fallback channels: {', '.join(m.fallback_channels)}")
        if m.idempotency_key:
            extra.append(f"idempotency key: {m.idempotency_key}")
        if m.locale:
            extra.append(f"recipient locale: {m.locale}")
        if m.tenant:
            extra.append(f"tenant: {m.tenant}")
        parts = [head, *(f"   {e}" for e in extra)]
        for locale, content in item.content.items():
            parts.append(f"-- locale {locale}")
            parts.extend(f"   {line}" for line in content_text(content).splitlines())
        blocks.append("\n".join(parts))
    return "\n\n".join(blocks)
