"""Errors raised by the catalog: at load time, while matching an event, while rendering."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.exceptions import TidingsError

__all__ = [
    "CatalogError",
    "CatalogLoadError",
    "EventError",
    "Problem",
    "RenderError",
    "RuleEvaluationError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a catalog, located like a compiler diagnostic (1-based line/col).

    `line` is 0 when the problem concerns a whole file or directory rather than a place in it.
    """

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if self.line <= 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}:{max(self.col, 1)}: {self.message}"


class CatalogError(TidingsError):
    """Root of every error the catalog raises."""


class CatalogLoadError(CatalogError):
    """The catalog directory is not a valid catalog; `problems` lists everything wrong with it."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"catalog is invalid: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *(str(p) for p in self.problems)])


class EventError(CatalogError):
    """The event envelope itself cannot be matched (e.g. it has no string `type`), or a
    trigger's `field` (`rule`, `template`, `channels`) names what the catalog can't do."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        if field is not None:
            super().__init__(f"trigger cannot be matched, {field}: {reason}")
            return
        super().__init__(
            f"event cannot be matched against the catalog: {reason}. "
            "Fix the producer so the envelope carries a string 'type' and a JSON-like 'data'."
        )


class RuleEvaluationError(CatalogError):
    """A rule's CEL expression failed at runtime for one event."""

    def __init__(
        self,
        rule_id: str,
        rule_version: int,
        field: str,
        expression: str,
        cause: str,
        event_id: object = None,
    ) -> None:
        self.rule_id = rule_id
        self.rule_version = rule_version
        self.field = field
        self.expression = expression
        self.cause = cause
        self.event_id = event_id
        where = f" for event {event_id!r}" if event_id is not None else ""
        super().__init__(
            f"rule {rule_id!r} (version {rule_version}), {field} `{expression}` failed{where}: "
            f"{cause}. Fix: guard the expression against this event shape (e.g. "
            "`has(event.data.x) ? event.data.x : ...`) or correct the producer's event."
        )


class RenderError(CatalogError):
    """A template failed to render one notification."""

    def __init__(
        self,
        template_id: str,
        channel: str,
        cause: str,
        fix: str,
        part: str | None = None,
        line: int | None = None,
    ) -> None:
        self.template_id = template_id
        self.channel = channel
        self.cause = cause
        self.part = part
        self.line = line
        where = f" {part}" if part else ""
        where += f" line {line}" if line else ""
        super().__init__(
            f"template {template_id!r}, channel {channel!r}{where} failed to render: "
            f"{cause}. Fix: {fix}"
        )
