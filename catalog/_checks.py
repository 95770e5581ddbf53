"""Checks of a rule against the rest of the catalog: templates, channels, recipient kinds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yaml.nodes import Node

from catalog import _yaml
from catalog.exceptions import Problem
from catalog.models import KNOWN_CHANNELS, REACHES, RENDERABLE_CHANNELS
from catalog.templates import TemplateSet

__all__ = ["at", "check_delivery", "check_reach"]


def check_reach(
    file: str, node: Node, label: str, raw: dict[Any, Any], problems: list[Problem]
) -> None:
    channels = {c for c in _as_list(raw.get("channels")) if isinstance(c, str)}
    for i, entry in enumerate(_as_list(raw.get("recipients"))):
        if not (isinstance(entry, dict) and len(entry) == 1):
            continue
        [kind] = entry
        if kind in REACHES and channels and not REACHES[kind] & channels:
            can = ", ".join(sorted(REACHES[kind]))
            problems.append(
                at(
                    file,
                    node,
                    ["recipients", i, "[key]"],
                    f"{label}, recipients.{i}: no channel of the rule can reach a {kind} "
                    f"recipient; add one of {can} to `channels`, or give a user id",
                )
            )


def check_delivery(
    file: str,
    node: Node,
    label: str,
    raw: dict[Any, Any],
    templates: TemplateSet,
    problems: list[Problem],
) -> None:
    template = raw.get("template")
    available: frozenset[str] = frozenset()
    if isinstance(template, str):
        available = templates.channels(template)
        if not available:
            known = ", ".join(sorted(templates.ids)) or "none"
            problems.append(
                at(
                    file,
                    node,
                    ["template"],
                    f"{label}: unknown template "
                    f"{template!r}; create templates/{template}/ or use one of: "
                    f"{known}",
                )
            )
    for i, channel in enumerate(_as_list(raw.get("channels"))):
        if not isinstance(channel, str) or channel not in KNOWN_CHANNELS:
            continue  # the schema check reports it
        if channel not in RENDERABLE_CHANNELS:
            problems.append(
                at(
                    file,
                    node,
                    ["channels", i],
                    f"{label}: channel {channel!r} "
                    "has no renderer yet; remove it (supported: "
                    f"{', '.join(sorted(RENDERABLE_CHANNELS))})",
                )
            )
        elif available and channel not in available:
            problems.append(
                at(
                    file,
                    node,
                    ["channels", i],
                    f"{label}: template "
                    f"{template!r} has no {channel} variant; add "
                    f"templates/{template}/{channel}/",
                )
            )


def at(file: str, node: Node, loc: Sequence[int | str], message: str) -> Problem:
    found, _ = _yaml.find_node(node, loc)
    return _yaml.problem_at(file, found, message)


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
