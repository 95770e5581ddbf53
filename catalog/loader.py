"""Load a catalog directory, reporting every problem in it at once, each at its file:line:col."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catalog import _yaml, cel
from catalog._checks import at as _at
from catalog._checks import check_delivery as _check_delivery
from catalog._checks import check_reach as _check_reach
from catalog.catalog import Catalog, CompiledRule
from catalog.exceptions import CatalogLoadError, Problem
from catalog.models import RecipientKind, Rule
from catalog.templates import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RENDER_SECONDS,
    DEFAULT_MAX_SMS_SEGMENTS,
    TemplateSet,
    digest,
    load_templates,
    read_tree,
)

__all__ = ["load_catalog", "load_catalog_files"]

_RULE_SUFFIXES = (".yaml", ".yml")
_TOP_LEVEL_KEYS = ("rules",)


def load_catalog(
    path: str | Path,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_render_seconds: float = DEFAULT_MAX_RENDER_SECONDS,
    max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
    default_locale: str = "en",
) -> Catalog:
    """Load and check the catalog at `path`; raises CatalogLoadError listing every problem.

    The version is a hash of every file's path and content, so the same files give the same
    version wherever they are loaded from (a directory, or a bundle published on Kafka).
    """
    root = Path(path)
    if not root.is_dir():
        raise CatalogLoadError(
            [
                Problem(
                    str(root),
                    0,
                    0,
                    "catalog directory not found; pass "
                    "a directory holding rules.yaml and templates/",
                )
            ]
        )
    try:
        files = read_tree(root)
    except OSError as exc:
        raise CatalogLoadError(
            [Problem(str(root), 0, 0, f"cannot read the catalog ({exc}); check its permissions")]
        ) from None
    return load_catalog_files(
        files,
        root,
        max_output_bytes=max_output_bytes,
        max_render_seconds=max_render_seconds,
        max_sms_segments=max_sms_segments,
        default_locale=default_locale,
    )


def load_catalog_files(
    files: Mapping[str, bytes],
    root: str | Path = "<catalog>",
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_render_seconds: float = DEFAULT_MAX_RENDER_SECONDS,
    max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
    default_locale: str = "en",
) -> Catalog:
    """Load a catalog from its files (posix path -> bytes); `root` names them in problems.

    Raises CatalogLoadError listing every problem.
    """
    root = Path(root)
    prefix = "templates/"
    templates, problems = load_templates(
        root / "templates",
        {name[len(prefix) :]: data for name, data in files.items() if name.startswith(prefix)},
        max_output_bytes=max_output_bytes,
        max_render_seconds=max_render_seconds,
        max_sms_segments=max_sms_segments,
        default_locale=default_locale,
    )
    if not any(name.startswith(prefix) for name in files):
        problems.append(
            Problem(
                str(root / "templates"),
                0,
                0,
                "templates directory is missing or empty; create templates/<template-id>/email/",
            )
        )
    # Top-level rule files first, then rules/ in path order: the order rules are matched in.
    rule_files = sorted((n for n in files if _is_rule_file(n)), key=lambda n: ("/" in n, n))
    if not rule_files:
        problems.append(
            Problem(
                str(root),
                0,
                0,
                "no rule files; add rules.yaml or rules/*.yaml with a top-level `rules:` list",
            )
        )
    rules: list[CompiledRule] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for name in rule_files:
        _load_rule_file(str(root / name), files[name], templates, rules, first_seen, problems)
    if problems:
        raise CatalogLoadError(sorted(problems, key=lambda p: (p.file, p.line, p.col)))
    return Catalog(digest(sorted(files.items())), rules, templates, str(root))


def _is_rule_file(name: str) -> bool:
    if not name.endswith(_RULE_SUFFIXES):
        return False
    return "/" not in name or name.startswith("rules/")


def _load_rule_file(
    file: str,
    data: bytes,
    templates: TemplateSet,
    rules: list[CompiledRule],
    first_seen: dict[str, tuple[str, int]],
    problems: list[Problem],
) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(file, 0, 0, f"not UTF-8 ({exc}); save the file as UTF-8"))
        return
    parsed = _yaml.parse(file, text)
    if isinstance(parsed, Problem):
        problems.append(parsed)
        return
    problems.extend(_yaml.duplicate_keys(file, parsed.node))
    for index, (node, raw) in enumerate(_rule_entries(file, parsed, problems), 1):
        rule_id = raw.get("id") if isinstance(raw, dict) else None
        label = f"rule {rule_id!r}" if isinstance(rule_id, str) else f"rule #{index}"
        compiled = _check_rule(file, parsed.lines, node, raw, label, templates, problems)
        if isinstance(rule_id, str):
            id_node, _ = _yaml.find_node(node, ["id"])
            line = id_node.start_mark.line + 1 if id_node is not None else 0
            if rule_id in first_seen:
                first_file, first_line = first_seen[rule_id]
                where = f"{first_file}:{first_line}"
                problems.append(
                    _yaml.problem_at(
                        file,
                        id_node,
                        f"duplicate rule id {rule_id!r} "
                        f"(first defined at {where}); rule ids must be "
                        "unique across the catalog, rename one",
                    )
                )
                continue
            first_seen[rule_id] = (file, line)
        if compiled is not None:
            rules.append(compiled)


def _rule_entries(
    file: str, parsed: _yaml.Parsed, problems: list[Problem]
) -> list[tuple[Node, Any]]:
    root, data = parsed.node, parsed.data
    if root is None:
        problems.append(Problem(file, 0, 0, "file is empty; add a top-level `rules:` list"))
        return []
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        problems.append(
            _yaml.problem_at(file, root, "top level must be a mapping with a `rules:` list")
        )
        return []
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            node = _yaml.key_node(root, str(key)) or root
            close = difflib.get_close_matches(str(key), _TOP_LEVEL_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            problems.append(
                _yaml.problem_at(
                    file, node, f"unknown top-level key {key!r}; {hint} (only `rules:` is allowed)"
                )
            )
    if "rules" not in data:
        problems.append(_yaml.problem_at(file, root, "missing top-level `rules:` list; add it"))
        return []
    rules_node, _ = _yaml.find_node(root, ["rules"])
    if data["rules"] is None:
        return []
    if not isinstance(rules_node, SequenceNode) or not isinstance(data["rules"], list):
        problems.append(
            _yaml.problem_at(
                file, rules_node, "`rules` must be a list of rules (`- id: ...` items)"
            )
        )
        return []
    return list(zip(rules_node.value, data["rules"], strict=False))


def _check_rule(
    file: str,
    lines: Sequence[str],
    node: Node,
    raw: Any,
    label: str,
    templates: TemplateSet,
    problems: list[Problem],
) -> CompiledRule | None:
    if not isinstance(raw, dict) or not isinstance(node, MappingNode):
        problems.append(
            _yaml.problem_at(
                file,
                node,
                f"{label} must be a mapping (`- id: ...` with its fields indented below)",
            )
        )
        return None
    before = len(problems)
    rule: Rule | None = None
    try:
        rule = Rule.model_validate(raw)
    except ValidationError as exc:
        errors = _relevant(exc.errors())
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing" and e["loc"]]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            what = f"fields {names}; add them" if len(missing) > 1 else f"field {names}; add it"
            problems.append(_yaml.problem_at(file, node, f"{label}: missing required {what}"))
        problems.extend(
            _schema_problem(file, node, label, e) for e in errors if e["type"] != "missing"
        )
    compiler = _Compiler(file, lines, node, label, problems)
    when = compiler.compile(["when"], raw.get("when", "true"), "bool")
    recipients: list[tuple[RecipientKind | None, cel.Expression | None]] = []
    for i, entry in enumerate(_as_list(raw.get("recipients"))):
        if isinstance(entry, dict) and len(entry) == 1:
            [(kind, source)] = entry.items()
            loc: list[int | str] = ["recipients", i, str(kind)]
            recipients.append((kind, compiler.compile(loc, source, "recipients")))
        else:
            recipients.append((None, compiler.compile(["recipients", i], entry, "recipients")))
    variables = [
        (str(name), compiler.compile(["variables", str(name)], source, "any"))
        for name, source in _as_dict(raw.get("variables")).items()
    ]
    key = compiler.compile(["idempotency_key"], raw.get("idempotency_key"), "string")
    locale = compiler.compile(["locale"], raw.get("locale"), "string")
    recipient_when = compiler.compile(["recipient_when"], raw.get("recipient_when"), "bool")
    # Checked on the raw data so these show up even while the schema check fails.
    _check_delivery(file, node, label, raw, templates, problems)
    _check_reach(file, node, label, raw, problems)
    if rule is None or when is None or len(problems) > before:
        return None
    tenants = None
    if rule.tenants:
        tenants = re.compile("|".join(f"(?:{fnmatch.translate(t)})" for t in rule.tenants))
    return CompiledRule(
        rule=rule,
        when=when,
        recipients=tuple(expr for _, expr in recipients if expr is not None),
        variables=tuple((name, expr) for name, expr in variables if expr is not None),
        template_version=templates.version(rule.template),
        recipient_kinds=tuple(kind for kind, _ in recipients),
        idempotency_key=key,
        locale=locale,
        tenants=tenants,
        recipient_when=recipient_when,
        profile_variables=frozenset(
            name
            for name, expr in variables
            if expr is not None and _READS_RECIPIENT.search(expr.source)
        ),
    )


# A variable whose expression reads `recipient` is evaluated per directory recipient.
_READS_RECIPIENT = re.compile(r"\brecipient\b")


class _Compiler:
    def __init__(
        self, file: str, lines: Sequence[str], node: Node, label: str, problems: list[Problem]
    ) -> None:
        self.file, self.lines, self.node = file, lines, node
        self.label, self.problems = label, problems

    def compile(
        self, loc: list[int | str], source: object, expected: cel.Expected
    ) -> cel.Expression | None:
        if not isinstance(source, str) or not source:
            return None  # the schema check already reports non-strings and empty strings
        try:
            return cel.compile_expression(source, expected)
        except cel.CelCompileError as exc:
            found, exact = _yaml.find_node(self.node, loc)
            field = ".".join(str(s) for s in loc)
            message = f"{self.label}, {field}: CEL error: {exc.message}; fix the expression"
            if found is None or not exact or not isinstance(found, ScalarNode):
                self.problems.append(_yaml.problem_at(self.file, found, message))
            else:
                line, col = _yaml.expression_position(found, self.lines, exc.line, exc.col)
                self.problems.append(Problem(self.file, line, col, message))
            return None


def _relevant(errors: Sequence[Any]) -> list[Any]:
    # pydantic checks a tuple's length after dropping its invalid items, so one bad channel
    # also yields "should have at least 1 item"; only the item's own error is useful.
    item_fields = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
    return [
        e
        for e in errors
        if not (
            e["type"] == "too_short" and e["loc"][:1] == e["loc"] and e["loc"][0] in item_fields
        )
    ]


def _schema_problem(file: str, node: Node, label: str, err: Any) -> Problem:
    loc = [s for s in err["loc"] if isinstance(s, int | str)]
    field = ".".join(str(s) for s in loc if s != "[key]")
    kind = err["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), list(Rule.model_fields), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "remove it"
        known = ", ".join(Rule.model_fields)
        return _at(
            file,
            node,
            [*loc, "[key]"],
            f"{label}: unknown field {field!r}; {hint} (known fields: {known})",
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        return _at(file, node, loc, f"{label}, {field}: {msg}")
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return _at(file, node, loc, f"{label}, {field}: {msg} (got {got}); correct the value")


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _as_dict(value: object) -> dict[object, object]:
    return value if isinstance(value, dict) else {}
