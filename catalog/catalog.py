"""A loaded catalog: rules indexed by event type, matched against events, templates rendered."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from catalog import cel
from catalog.exceptions import EventError, RuleEvaluationError
from catalog.models import REACHES, EmailContent, Match, RecipientKind, Rule
from catalog.templates import TemplateSet
from schemas.content import Content
from schemas.trigger import NOTIFY_TYPE, Trigger

__all__ = ["ENVELOPE_KEYS", "Catalog", "CompiledRule"]

# Always present in `event`, so `event.subject == null` works instead of failing on a
# missing key when the producer left an optional attribute out.
ENVELOPE_KEYS = ("id", "type", "source", "subject", "time", "tenant", "data")
_WILDCARD = re.compile(r"[*?\[]")
# Event types come from producers, so the per-type cache must not grow without bound.
_CACHE_LIMIT = 4096


_TRUE = cel.compile_expression("true", "bool")
_ONLINE = re.compile(r"\brecipient\s*\.\s*\??\s*online\b")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule with its CEL expressions compiled and its template version resolved."""

    rule: Rule
    when: cel.Expression
    recipients: tuple[cel.Expression, ...]
    variables: tuple[tuple[str, cel.Expression], ...]
    template_version: str
    # Parallel to `recipients`: the kind a `- user:`/`- email:`/... entry declares, or None
    # for a plain expression (then the value's shape decides).
    recipient_kinds: tuple[RecipientKind | None, ...] = ()
    idempotency_key: cel.Expression | None = None
    locale: cel.Expression | None = None
    tenants: re.Pattern[str] | None = None  # None: every tenant
    recipient_when: cel.Expression | None = None
    # Names of the variables that read `recipient`: for a directory recipient they are
    # evaluated by `Catalog.personalize`, once its record is known.
    profile_variables: frozenset[str] = frozenset()


class Catalog:
    """Rules and templates of one catalog version; immutable once built."""

    def __init__(
        self, version: str, rules: Sequence[CompiledRule], templates: TemplateSet, source: str = ""
    ) -> None:
        self.version = version
        self.source = source
        self._rules = tuple(rules)
        self._templates = templates
        self._exact: dict[str, list[int]] = {}
        self._wildcards: list[tuple[re.Pattern[str], int]] = []
        for index, compiled in enumerate(self._rules):
            if not compiled.rule.enabled:
                continue
            for pattern in compiled.rule.events:
                if _WILDCARD.search(pattern):
                    self._wildcards.append((re.compile(fnmatch.translate(pattern)), index))
                else:
                    self._exact.setdefault(pattern, []).append(index)
        self._cache: dict[str, tuple[CompiledRule, ...]] = {}
        self._by_id = {c.rule.id: c for c in self._rules}
        # Template triggers' rules, by their shape (`personalize` needs none of them: they
        # have no `recipient_when` and no variables that read `recipient`).
        self._templated: dict[tuple[object, ...], CompiledRule] = {}
        # What preferences may name: computed once, immutable so no caller can change them.
        self._categories = frozenset(c.rule.category for c in self._rules)
        self._rule_ids = frozenset(self._by_id)
        # Route reads presence (one Redis round trip a batch) only for a catalog that uses it.
        self._reads_presence = any(
            _ONLINE.search(text)
            for c in self._rules
            if c.rule.enabled
            for text in (c.rule.recipient_when or "", *c.rule.variables.values())
        )

    @property
    def reads_presence(self) -> bool:
        """Whether an enabled rule reads `recipient.online` (in `recipient_when` or a
        variable): route then looks the batch's directory recipients up in presence."""
        return self._reads_presence

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, enabled or not, in catalog order."""
        return tuple(c.rule for c in self._rules)

    @property
    def templates(self) -> TemplateSet:
        """The compiled templates."""
        return self._templates

    def categories(self) -> frozenset[str]:
        """The categories of every rule, enabled or not (what preferences may name)."""
        return self._categories

    def rule_ids(self) -> frozenset[str]:
        """The ids of every rule, enabled or not (what preferences may name)."""
        return self._rule_ids

    def event_patterns(self) -> frozenset[str]:
        """Event types and wildcard patterns of the enabled rules; raises nothing."""
        return frozenset(p for c in self._rules if c.rule.enabled for p in c.rule.events)

    def rules_for(self, event_type: str) -> tuple[Rule, ...]:
        """Enabled rules an event of `event_type` meets, in catalog order; raises nothing."""
        return tuple(c.rule for c in self._resolve(event_type))

    def _resolve(self, event_type: str) -> tuple[CompiledRule, ...]:
        cached = self._cache.get(event_type)
        if cached is not None:
            return cached
        indexes = set(self._exact.get(event_type, ()))
        indexes.update(i for pattern, i in self._wildcards if pattern.match(event_type))
        resolved = tuple(self._rules[i] for i in sorted(indexes))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[event_type] = resolved
        return resolved

    def evaluate(self, envelope: Mapping[str, Any], now: dt.datetime) -> list[Match]:
        """Match the event against enabled rules; raises EventError, RuleEvaluationError.

        One Match per (recipient, channel); recipients are deduplicated within a rule. A naive
        `now` is taken as UTC. RuleEvaluationError means a rule's expression failed or yielded
        the wrong kind of value for this event; EventError that the envelope has no str `type`.
        """
        event_type = envelope.get("type")
        if not isinstance(event_type, str):
            raise EventError(f"'type' is {type(event_type).__name__}, not a string")
        rules = self._resolve(event_type)
        if not rules:
            return []
        event = _event(envelope)
        bindings = cel.bind(event, now)
        event_id = event["id"]
        matches: list[Match] = []
        tenant = event.get("tenant")
        for compiled in rules:
            if _for_tenant(compiled, tenant):
                matches.extend(self._judge(compiled, bindings, event_id, tenant))
        return matches

    def trigger(
        self, envelope: Mapping[str, Any], trigger: Trigger, now: dt.datetime
    ) -> list[Match]:
        """Match a trigger (a `tidings.notify` event): the one rule it names, or its template.

        `envelope` is the event as the rule sees it (`data`: the trigger's data). A rule's
        `events:` don't apply; its tenants, `when` and the rest do. The trigger's recipients
        (None: the rule's own) are each an address (by its shape) or a directory recipient
        id. A template trigger is a rule of its own (`template:<id>`, built once and kept):
        its channels, category, priority and locale; the template's variables are `data`'s
        keys. Raises EventError (no such enabled rule or template, not for this tenant, a
        channel the template has no variant for), RuleEvaluationError.
        """
        if trigger.template is not None:
            compiled = self._template_rule(trigger)
        else:
            compiled = self._rule_for_trigger(trigger.rule or "", envelope.get("tenant"))
        event = _event(envelope)
        given: dict[str, tuple[RecipientKind, bool]] | None = None
        if trigger.recipients is not None:
            given = {}
            for r in trigger.recipients:
                kind = _kind_of(r)
                given.setdefault(r, (kind, kind == "user"))
        matches = self._judge(compiled, cel.bind(event, now), event["id"],
                              envelope.get("tenant"), given)  # fmt: skip
        if trigger.template is None:
            return matches
        variables = dict(trigger.data)
        return [m.model_copy(update={"variables": variables}) for m in matches]

    def _rule_for_trigger(self, rule_id: str, tenant: object) -> CompiledRule:
        compiled = self._by_id.get(rule_id)
        if compiled is None or not compiled.rule.enabled:
            state = "has it disabled" if compiled is not None else "has no such rule"
            raise EventError(
                f"the trigger names rule {rule_id!r}, and catalog {self.version} {state}: "
                "name an enabled rule (`tidings catalog rules` lists them)",
                "rule",
            )
        if not _for_tenant(compiled, tenant):
            raise EventError(
                f"rule {rule_id!r} is not for tenant {tenant!r} (its `tenants:` "
                f"{list(compiled.rule.tenants)}): trigger one of that tenant's rules",
                "rule",
            )
        return compiled

    def _template_rule(self, trigger: Trigger) -> CompiledRule:
        """The rule a template trigger stands for, built on first use (bounded cache)."""
        template = trigger.template or ""
        channels = tuple(trigger.channels or ())
        policy, category = trigger.channel_policy or "all", trigger.category or ""
        priority = trigger.priority or "normal"
        shape = (template, channels, policy, category, priority, trigger.locale)
        cached = self._templated.get(shape)
        if cached is not None:
            return cached
        if template not in self._templates.ids:
            raise EventError(
                f"the trigger names template {template!r}, and catalog {self.version} has no "
                "such template: name one of its templates",
                "template",
            )
        if category not in self._categories:
            raise EventError(
                f"category {category!r} is no category of catalog {self.version}'s rules, so "
                "no preference could name it: use one of "
                f"{', '.join(sorted(self._categories))}",
                "category",
            )
        missing = [c for c in channels if c not in self._templates.channels(template)]
        if missing:
            raise EventError(
                f"template {template!r} has no variant for channel(s) {', '.join(missing)}: "
                f"send it on {', '.join(sorted(self._templates.channels(template)))}, or add "
                "the variant's files to the catalog",
                "channels",
            )
        # Built without validation: its id (`template:<id>`) is on purpose no rule id.
        rule = Rule.model_construct(
            id=trigger.rule_id, version=1, description="",
            events=(NOTIFY_TYPE,), when="true", recipients=(), channels=channels,
            channel_policy=policy, template=template, priority=priority,
            category=category, enabled=True, variables={}, idempotency_key=None, tenants=(),
            locale=trigger.locale, recipient_when=None,
        )  # fmt: skip
        locale = None
        if trigger.locale is not None:  # a BCP 47 tag (checked): a safe CEL string literal
            locale = cel.compile_expression(json.dumps(trigger.locale), "string")
        compiled = CompiledRule(
            rule=rule,
            when=_TRUE,
            recipients=(),
            variables=(),
            template_version=self._templates.version(template),
            locale=locale,
        )
        if len(self._templated) >= _CACHE_LIMIT:
            self._templated.clear()
        self._templated[shape] = compiled
        return compiled

    def _judge(
        self,
        compiled: CompiledRule,
        bindings: cel.Bindings,
        event_id: object,
        tenant: object,
        given: dict[str, tuple[RecipientKind, bool]] | None = None,
    ) -> list[Match]:
        rule = compiled.rule
        verdict = _run(compiled, "when", compiled.when, bindings, event_id)
        if verdict is False:
            return []
        if verdict is not True:
            raise _error(
                compiled,
                "when",
                compiled.when,
                event_id,
                f"yields {_describe(verdict)}, not a bool",
            )
        recipients = _recipients(compiled, bindings, event_id) if given is None else given
        if not recipients:
            return []
        # Variables that read `recipient` wait for the directory's record of a `- user:`
        # recipient (`personalize`); for an address they see `recipient` as {}.
        deferred = compiled.profile_variables
        variables = {
            name: _run(compiled, f"variables.{name}", expr, bindings, event_id)
            for name, expr in compiled.variables
            if name not in deferred
        }
        with_profile = dict(variables)
        for name, expr in compiled.variables:
            if name in deferred and any(not d for _, d in recipients.values()):
                with_profile[name] = _run(compiled, f"variables.{name}", expr, bindings, event_id)
        key = _text(compiled, "idempotency_key", compiled.idempotency_key, bindings, event_id)
        locale = _text(compiled, "locale", compiled.locale, bindings, event_id)
        matches: list[Match] = []
        for recipient, (kind, _) in recipients.items():
            reachable = [c for c in rule.channels if c in REACHES[kind]]
            if not reachable:
                source = compiled.recipients[0].source if compiled.recipients else "[given]"
                raise RuleEvaluationError(
                    rule.id, rule.version, "recipients", source,
                    f"recipient {recipient!r} is a {kind} address, which none of the channels "
                    f"{list(rule.channels)} can reach; add a channel that can, or yield a user id",
                    event_id,
                )  # fmt: skip
        for recipient, (kind, directory) in recipients.items():
            reachable = [c for c in rule.channels if c in REACHES[kind]]
            chosen = reachable if rule.channel_policy == "all" else reachable[:1]
            for channel in chosen:
                rest = tuple(reachable[1:]) if rule.channel_policy == "first-available" else ()
                matches.append(
                    Match(
                        rule_id=rule.id,
                        rule_version=rule.version,
                        recipient=recipient,
                        channel=channel,
                        template_id=rule.template,
                        template_version=compiled.template_version,
                        priority=rule.priority,
                        category=rule.category,
                        variables=variables if directory else with_profile,
                        recipient_kind=kind,
                        directory=directory,
                        fallback_channels=rest,
                        idempotency_key=key,
                        locale=locale,
                        tenant=tenant if isinstance(tenant, str) and tenant else None,
                    )
                )
        return matches

    def personalize(
        self,
        match: Match,
        envelope: Mapping[str, Any],
        profile: Mapping[str, Any],
        now: dt.datetime,
    ) -> Match | None:
        """`match` for one directory recipient whose record is `profile`: None when the rule's
        `recipient_when` says no; else with the variables that read `recipient` evaluated and
        the recipient's locale as the default. Raises RuleEvaluationError like `evaluate`."""
        compiled = self._by_id.get(match.rule_id)
        if compiled is None or (compiled.recipient_when is None and not compiled.profile_variables):
            if match.locale or not profile.get("locale"):
                return match
            return match.model_copy(update={"locale": profile["locale"]})
        event = _event(envelope)
        bindings = cel.bind(event, now, profile)
        event_id = event["id"]
        if compiled.recipient_when is not None:
            verdict = _run(compiled, "recipient_when", compiled.recipient_when, bindings, event_id)
            if verdict is not True:
                if verdict is not False:
                    raise _error(compiled, "recipient_when", compiled.recipient_when, event_id,
                                 f"yields {_describe(verdict)}, not a bool")  # fmt: skip
                return None
        variables = dict(match.variables)
        for name, expr in compiled.variables:
            if name in compiled.profile_variables:
                variables[name] = _run(compiled, f"variables.{name}", expr, bindings, event_id)
        locale = match.locale or profile.get("locale") or None
        return match.model_copy(update={"variables": variables, "locale": locale})

    def render(self, match: Match, locale: str | None = None) -> Content:
        """Render `match` on its channel, for `locale` (else the match's); raises RenderError."""
        context = {"recipient": match.recipient, **match.variables}
        return self._templates.render_content(
            match.template_id, match.channel, context, locale or match.locale
        )

    def render_content(
        self,
        template_id: str,
        channel: str,
        context: Mapping[str, Any],
        locale: str | None = None,
    ) -> Content:
        """Render the `channel` variant of `template_id` with `context`; raises RenderError.

        The content model matches the channel: EmailContent, SmsContent, PushContent (push,
        webpush), SlackContent, WebhookContent or InAppContent (schemas/content.py).
        """
        return self._templates.render_content(template_id, channel, context, locale)

    def render_email(
        self, template_id: str, context: Mapping[str, Any], locale: str | None = None
    ) -> EmailContent:
        """Render email template `template_id` with `context`; raises RenderError."""
        return self._templates.render_email(template_id, context, locale)

    def __repr__(self) -> str:
        return (
            f"Catalog(version={self.version!r}, rules={len(self._rules)}, source={self.source!r})"
        )


def _event(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The `event` rules see: every envelope key present (None when the producer left it
    out), so `event.subject == null` works instead of failing on a missing key."""
    event: dict[str, Any] = dict.fromkeys(ENVELOPE_KEYS)
    event.update(envelope)
    return event


def _for_tenant(compiled: CompiledRule, tenant: object) -> bool:
    """Whether the rule's `tenants:` let `tenant` through (no `tenants:`: every tenant)."""
    return compiled.tenants is None or (
        isinstance(tenant, str) and compiled.tenants.fullmatch(tenant) is not None
    )


def _run(
    compiled: CompiledRule,
    field: str,
    expr: cel.Expression,
    bindings: cel.Bindings,
    event_id: object,
) -> Any:
    try:
        return expr.evaluate(bindings)
    except cel.CelEvalError as exc:
        raise _error(compiled, field, expr, event_id, str(exc)) from None


def _recipients(
    compiled: CompiledRule, bindings: cel.Bindings, event_id: object
) -> dict[str, tuple[RecipientKind, bool]]:
    # recipient → (kind, whether the directory resolves it: a declared `- user:` entry)
    found: dict[str, tuple[RecipientKind, bool]] = {}  # first occurrence wins
    kinds = compiled.recipient_kinds or (None,) * len(compiled.recipients)
    for index, (expr, declared) in enumerate(zip(compiled.recipients, kinds, strict=True)):
        field = f"recipients[{index}]"
        value = _run(compiled, field, expr, bindings, event_id)
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            raise _error(
                compiled,
                field,
                expr,
                event_id,
                f"yields {_describe(value)}, not a string or a list of strings "
                "(return [] when there is nobody to notify)",
            )
        for item in values:
            if not isinstance(item, str) or not item.strip():
                raise _error(
                    compiled,
                    field,
                    expr,
                    event_id,
                    f"yields a recipient that is {_describe(item)}, not a non-empty string",
                )
            found.setdefault(item.strip(), (declared or _kind_of(item.strip()), declared == "user"))
    return found


def _kind_of(recipient: str) -> RecipientKind:
    if cel.is_email(recipient):
        return "email"
    if cel.is_phone(recipient):
        return "phone"
    if recipient.startswith(("https://", "http://")):
        return "url"
    return "user"


def _text(
    compiled: CompiledRule,
    field: str,
    expr: cel.Expression | None,
    bindings: cel.Bindings,
    event_id: object,
) -> str | None:
    if expr is None:
        return None
    value = _run(compiled, field, expr, bindings, event_id)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _error(compiled, field, expr, event_id, f"yields {_describe(value)}, not a string")
    return value


def _error(
    compiled: CompiledRule, field: str, expr: cel.Expression, event_id: object, cause: str
) -> RuleEvaluationError:
    return RuleEvaluationError(
        compiled.rule.id, compiled.rule.version, field, expr.source, cause, event_id
    )


def _describe(value: object) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
