"""The rules catalog: CEL rules matched against events, Jinja2 templates rendered per match.

`load_catalog(path)` reads a directory (rules.yaml or rules/*.yaml, plus templates/), checks
everything in it and returns an immutable `Catalog`; `Catalog.evaluate(envelope, now)` yields
one `Match` per (recipient, channel); `Catalog.render(match)` yields the `EmailContent`.
"""

from catalog.catalog import ENVELOPE_KEYS, Catalog
from catalog.exceptions import (
    CatalogError,
    CatalogLoadError,
    EventError,
    Problem,
    RenderError,
    RuleEvaluationError,
)
from catalog.loader import load_catalog
from catalog.models import (
    KNOWN_CHANNELS,
    PRIORITIES,
    RENDERABLE_CHANNELS,
    EmailContent,
    Match,
    Priority,
    Rule,
)
from catalog.templates import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_RENDER_SECONDS, TemplateSet

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_RENDER_SECONDS",
    "ENVELOPE_KEYS",
    "KNOWN_CHANNELS",
    "PRIORITIES",
    "RENDERABLE_CHANNELS",
    "Catalog",
    "CatalogError",
    "CatalogLoadError",
    "EmailContent",
    "EventError",
    "Match",
    "Priority",
    "Problem",
    "RenderError",
    "Rule",
    "RuleEvaluationError",
    "TemplateSet",
    "load_catalog",
]
