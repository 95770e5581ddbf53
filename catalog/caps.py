"""Rate limits and frequency caps, the pure side: the rules, their Redis keys, their reasons.

A `CapRule` says "at most `limit` notifications per `window_s` seconds" for one scope:

- `recipient_channel`: per recipient per channel (3 push per hour);
- `recipient`: per recipient across every rule and channel it covers (the frequency budget:
  10 a day across everything);
- `tenant_channel`: per tenant per channel (10,000 SMS a minute for the whole tenant).

`channels` and `categories` narrow what a cap counts (empty: everything). Over the cap a
notification is suppressed (status `suppressed`, reason `cap:…`) or deferred (parked until
the window frees): `behaviour`, overridden per category (`behaviour_by_category`) and per
rule (`behaviour_by_rule`; the rule wins). Critical notifications and required categories
never reach the caps (`catalog.preferences.Decision.bypassed`).

`parse_caps(raw)` reads the config list (docs/recipients.md#caps) with every
problem named; `cap_checks(…)` gives what one notification must pass, as `CapCheck`s with
their Redis key (`cap_keys`) and reason (`cap:recipient_channel:push:3/3600s`), bundled into
a `CapRequest` for `streams.state.caps.CapStore`, which answers `CapResult`s.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from catalog.exceptions import CatalogError
from schemas.channels import CHANNELS

__all__ = [
    "CAP_BEHAVIOURS",
    "CAP_KEY_PREFIX",
    "CAP_SCOPES",
    "MAX_CAP_LIMIT",
    "MAX_CAP_WINDOW_S",
    "CapBehaviour",
    "CapCheck",
    "CapConfigError",
    "CapRequest",
    "CapResult",
    "CapRule",
    "CapScope",
    "cap_checks",
    "cap_keys",
    "check_references",
    "parse_caps",
]

CapScope = Literal["recipient_channel", "recipient", "tenant_channel"]
CapBehaviour = Literal["suppress", "defer"]
CAP_SCOPES: tuple[CapScope, ...] = ("recipient_channel", "recipient", "tenant_channel")
CAP_BEHAVIOURS: tuple[CapBehaviour, ...] = ("suppress", "defer")
CAP_KEY_PREFIX = "tidings:cap:"
MAX_CAP_WINDOW_S = 31 * 86400  # a month: a sliding log longer than that is a report, not a cap
MAX_CAP_LIMIT = 1_000_000  # the log keeps one entry per counted notification per key

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_SCOPE_TAG = {"recipient_channel": "rc", "recipient": "r", "tenant_channel": "tc"}
# A key part is used as is when short and plain; otherwise hashed (`#` + 32 hex digits). `#`
# is never in a plain part, so a hashed part can't collide with a plain one, and `:` never is
# either, so the parts can't run into each other.
_PLAIN = re.compile(r"^[A-Za-z0-9._@+\-]{0,64}$")


class CapConfigError(CatalogError):
    """The caps config is invalid; `problems` names each problem at its place (`caps[1].limit`)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            f"caps config is invalid ({len(self.problems)} problem(s)):\n  "
            + "\n  ".join(self.problems)
            + "\nfix each entry; the shape is in docs/recipients.md#caps"
        )


def _duration(v: Any) -> Any:
    # 3600, "3600", "90s", "15m", "1h", "1d"; anything else is left to the int check.
    if isinstance(v, str):
        if v.strip().isdigit():
            return int(v)
        m = _DURATION.match(v)
        if m is None:
            raise ValueError(f"{v!r} is not a duration: use seconds (3600) or 90s, 15m, 1h, 1d")
        return int(m.group(1)) * _UNITS[m.group(2)]
    return v


Behaviours = dict[Annotated[str, Field(min_length=1, max_length=256)], CapBehaviour]


class CapRule(BaseModel):
    """At most `limit` notifications per `window_s` seconds in one `scope` (module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(max_length=128)] | None = None  # for people; not in the key
    scope: CapScope
    limit: Annotated[int, Field(strict=True, ge=1, le=MAX_CAP_LIMIT)]
    window_s: Annotated[
        int,
        BeforeValidator(_duration),
        Field(
            strict=True,
            ge=1,
            le=MAX_CAP_WINDOW_S,
            validation_alias=AliasChoices("window_s", "window"),
        ),
    ]
    behaviour: CapBehaviour = "suppress"
    channels: tuple[str, ...] = ()
    categories: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    behaviour_by_category: Behaviours = Field(default_factory=dict)
    behaviour_by_rule: Behaviours = Field(default_factory=dict)

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(CHANNELS))
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}: use {', '.join(CHANNELS)}")
        return v

    @functools.cached_property
    def ident(self) -> str:
        """8 hex digits naming what this cap counts (scope, window, channels, categories).

        Two caps that count different things never share a key; a cap whose limit or
        behaviour changes keeps its history.
        """
        what = f"{self.scope}|{self.window_s}|{sorted(self.channels)}|{sorted(self.categories)}"
        return hashlib.blake2b(what.encode(), digest_size=4).hexdigest()

    def applies(self, channel: str, category: str | None) -> bool:
        """Whether a notification on `channel` of `category` counts towards this cap."""
        if self.channels and channel not in self.channels:
            return False
        return not self.categories or (category is not None and category in self.categories)

    def behaviour_for(self, rule_id: str | None, category: str | None) -> CapBehaviour:
        """Over this cap: the rule's behaviour, else the category's, else `behaviour`."""
        if rule_id is not None and rule_id in self.behaviour_by_rule:
            return self.behaviour_by_rule[rule_id]
        if category is not None and category in self.behaviour_by_category:
            return self.behaviour_by_category[category]
        return self.behaviour

    def reason(self, channel: str) -> str:
        """The status reason over this cap: `cap:recipient_channel:push:3/3600s`,
        `cap:recipient:10/86400s` (the budget names no channel)."""
        where = self.scope if self.scope == "recipient" else f"{self.scope}:{channel}"
        return f"cap:{where}:{self.limit}/{self.window_s}s"


def _part(text: str) -> str:
    if _PLAIN.match(text):
        return text
    return "#" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cap_keys(
    rule: CapRule,
    tenant: str | None,
    recipient: str,
    channel: str,
    *,
    prefix: str = CAP_KEY_PREFIX,
) -> str:
    """The Redis key of `rule`'s counter for this (tenant, recipient, channel).

    `<prefix><rc|r|tc>:<window_s>:<ident>:<tenant>[:<recipient>][:<channel>]`: the budget
    (`recipient`) has no channel part, `tenant_channel` no recipient part. An id longer than
    64 characters, or with characters outside `A-Za-z0-9._@+-`, is replaced by `#` and its
    BLAKE2b-128 hex digest, so a key is at most ~200 characters past the prefix.
    """
    return _key(rule, prefix, _part(tenant or ""), _part(recipient), _part(channel))


def _key(rule: CapRule, prefix: str, tenant: str, recipient: str, channel: str) -> str:
    # The parts already through _part().
    head = f"{prefix}{_SCOPE_TAG[rule.scope]}:{rule.window_s}:{rule.ident}:{tenant}"
    if rule.scope == "recipient":
        return f"{head}:{recipient}"
    if rule.scope == "tenant_channel":
        return f"{head}:{channel}"
    return f"{head}:{recipient}:{channel}"


@dataclass(frozen=True, slots=True)
class CapCheck:
    """One cap one notification must pass: its key, its bound, its reason and behaviour."""

    key: str
    limit: int
    window_ms: int
    cap: str
    behaviour: CapBehaviour = "suppress"


@dataclass(frozen=True, slots=True)
class CapRequest:
    """One notification's caps, checked together (all or nothing).

    `member` identifies it in the sliding logs: pass the notification id, so a batch redone
    (an aborted Kafka transaction) finds it counted already instead of counting it twice.
    """

    member: str
    checks: tuple[CapCheck, ...]


@dataclass(frozen=True, slots=True)
class CapResult:
    """The answer for one `CapRequest`.

    Allowed: counted in every cap. Refused: counted in none; `cap` is the reason of the
    first refusing check (in config order), `behaviour` its behaviour, and `retry_at_ms`
    (epoch ms) the moment that cap's window has room again (for `defer`; set either way).
    """

    allowed: bool
    cap: str | None = None
    retry_at_ms: int | None = None
    behaviour: CapBehaviour | None = None


def cap_checks(
    caps: Sequence[CapRule],
    *,
    tenant: str | None,
    recipient: str,
    channel: str,
    category: str | None,
    rule_id: str | None,
    prefix: str = CAP_KEY_PREFIX,
) -> tuple[CapCheck, ...]:
    """The checks one notification must pass: one per cap that applies, in config order."""
    t, r, ch = _part(tenant or ""), _part(recipient), _part(channel)
    return tuple(
        CapCheck(
            _key(c, prefix, t, r, ch),
            c.limit,
            c.window_s * 1000,
            c.reason(channel),
            c.behaviour_for(rule_id, category),
        )
        for c in caps
        if c.applies(channel, category)
    )


def parse_caps(raw: object, *, where: str = "caps") -> tuple[CapRule, ...]:
    """The caps of a config value: a list of mappings (None or [] → no caps).

    Raises CapConfigError naming every problem at its place (`caps[1].window_s: …`),
    including two caps that count the same notifications over the same window (they would
    share a key: merge them, or narrow one).
    """
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise CapConfigError([f"{where}: must be a list of caps, got {type(raw).__name__}"])
    problems: list[str] = []
    caps: list[CapRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: must be a mapping, got {type(item).__name__}")
            continue
        try:
            cap = CapRule.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
                shown = loc and err["type"] != "missing" and "input" in err
                got = f" (got {err['input']!r})" if shown else ""
                problems.append(f"{at}{loc}: {err['msg']}{got}")
            continue
        if cap.ident in seen:
            problems.append(
                f"{at}: counts the same notifications over the same window as "
                f"{where}[{seen[cap.ident]}]; merge them or narrow one (channels, categories)"
            )
            continue
        seen[cap.ident] = i
        caps.append(cap)
    if problems:
        raise CapConfigError(problems)
    return tuple(caps)


def check_references(
    caps: Sequence[CapRule], *, categories: Collection[str], rule_ids: Collection[str]
) -> list[str]:
    """Problems with the names caps refer to: categories and rules the catalog doesn't have."""
    problems: list[str] = []
    for i, c in enumerate(caps):
        for field, names, known in (
            ("categories", c.categories, categories),
            ("behaviour_by_category", tuple(c.behaviour_by_category), categories),
            ("behaviour_by_rule", tuple(c.behaviour_by_rule), rule_ids),
        ):
            unknown = sorted(set(names) - set(known))
            if unknown:
                problems.append(
                    f"caps[{i}].{field}: unknown {unknown}; known: {', '.join(sorted(known))}"
                )
    return problems
