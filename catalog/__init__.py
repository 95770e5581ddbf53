"""The rules catalog: CEL rules matched against events, Jinja2 templates rendered per match.

`load_catalog(path)` reads a directory (rules.yaml or rules/*.yaml, plus templates/), checks
everything in it and returns an immutable `Catalog`; `Catalog.evaluate(envelope, now)` yields
one `Match` per (recipient, channel); `Catalog.render(match)` and
`Catalog.render_content(template_id, channel, context, locale)` yield the channel's content
model from schemas/content.py. The format is documented in docs/catalog.md.

`decide` (catalog/preferences.py) is the preference decision for one notification (opt-outs,
quiet hours, critical bypass); catalog/caps.py holds the caps' rules, keys and reasons.
"""

from catalog.caps import (
    CAP_BEHAVIOURS,
    CAP_KEY_PREFIX,
    CAP_SCOPES,
    CapBehaviour,
    CapCheck,
    CapConfigError,
    CapRequest,
    CapResult,
    CapRule,
    CapScope,
    cap_checks,
    cap_keys,
    check_references,
    parse_caps,
)
from catalog.catalog import ENVELOPE_KEYS, Catalog
from catalog.exceptions import (
    CatalogError,
    CatalogLoadError,
    EventError,
    Problem,
    RenderError,
    RuleEvaluationError,
)
from catalog.loader import load_catalog, load_catalog_files
from catalog.models import (
    CHANNEL_POLICIES,
    KNOWN_CHANNELS,
    PRIORITIES,
    RECIPIENT_KINDS,
    RENDERABLE_CHANNELS,
    ChannelPolicy,
    EmailContent,
    Match,
    Priority,
    RecipientKind,
    Rule,
)
from catalog.preferences import Decision, decide, unknown_names
from catalog.templates import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RENDER_SECONDS,
    DEFAULT_MAX_SMS_SEGMENTS,
    TemplateSet,
)
from schemas.content import Content

__all__ = [
    "CAP_BEHAVIOURS",
    "CAP_KEY_PREFIX",
    "CAP_SCOPES",
    "CHANNEL_POLICIES",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_RENDER_SECONDS",
    "DEFAULT_MAX_SMS_SEGMENTS",
    "ENVELOPE_KEYS",
    "KNOWN_CHANNELS",
    "PRIORITIES",
    "RECIPIENT_KINDS",
    "RENDERABLE_CHANNELS",
    "CapBehaviour",
    "CapCheck",
    "CapConfigError",
    "CapRequest",
    "CapResult",
    "CapRule",
    "CapScope",
    "Catalog",
    "CatalogError",
    "CatalogLoadError",
    "ChannelPolicy",
    "Content",
    "Decision",
    "EmailContent",
    "EventError",
    "Match",
    "Priority",
    "Problem",
    "RecipientKind",
    "RenderError",
    "Rule",
    "RuleEvaluationError",
    "TemplateSet",
    "cap_checks",
    "cap_keys",
    "check_references",
    "decide",
    "load_catalog",
    "load_catalog_files",
    "parse_caps",
    "unknown_names",
]
