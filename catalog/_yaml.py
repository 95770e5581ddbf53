"""YAML parsing that keeps the node tree, so every problem can point at a file:line:col."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from catalog.exceptions import Problem

__all__ = [
    "Parsed",
    "duplicate_keys",
    "expression_position",
    "find_node",
    "key_node",
    "parse",
    "problem_at",
]


class _Loader(yaml.SafeLoader):
    # SafeConstructor lets ValueError escape for `2024-02-30` and AttributeError for an empty
    # `!!timestamp`; turn any such slip into a located YAML error so the loader never crashes.
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except RecursionError:
            raise
        except Exception as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid {node.tag.rsplit(':', 1)[-1]} value: {exc}", node.start_mark
            ) from None


class Parsed:
    """One parsed YAML document: its node tree, its data and its source lines."""

    __slots__ = ("data", "lines", "node")

    def __init__(self, node: Node | None, data: Any, lines: Sequence[str]) -> None:
        self.node = node
        self.data = data
        self.lines = lines


def problem_at(file: str, node: Node | None, message: str) -> Problem:
    """A problem located at the start of `node` (file-level when `node` is None)."""
    if node is None:
        return Problem(file, 0, 0, message)
    return Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, message)


def parse(file: str, text: str) -> Parsed | Problem:
    """Parse one YAML document; a syntax error comes back as a located Problem."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader rejects unprintable characters right here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        message = f"YAML syntax error: {what or exc}; fix the YAML at this point"
        if mark is None:
            return Problem(file, 0, 0, message)
        return Problem(file, mark.line + 1, mark.column + 1, message)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        col = exc.position - (before.rfind("\n") + 1) + 1
        return Problem(
            file,
            line,
            col,
            f"character U+{_codepoint(exc.character)} is not allowed in YAML; remove it",
        )
    except yaml.YAMLError as exc:
        return Problem(file, 0, 0, f"YAML error: {exc}; fix the file")
    except RecursionError:
        return Problem(file, 0, 0, "YAML nests too deeply; flatten the document")
    except Exception as exc:
        # PyYAML itself can slip, e.g. ValueError from chr() for "\U00110000": still a
        # problem in the file, never a crash of the loader.
        message = f"YAML error: {exc}; fix the file near this point"
        if loader is None:
            return Problem(file, 0, 0, message)
        mark = loader.get_mark()
        return Problem(file, mark.line + 1, mark.column + 1, message)
    finally:
        if loader is not None:
            loader.dispose()
    return Parsed(node, data, text.splitlines())


def _codepoint(character: object) -> str:
    if isinstance(character, int):
        return f"{character:04X}"
    if isinstance(character, str) and len(character) == 1:
        return f"{ord(character):04X}"
    return "?"


def duplicate_keys(file: str, root: Node | None) -> list[Problem]:
    """Every mapping key that appears twice (YAML silently keeps the last, hiding typos)."""
    problems: list[Problem] = []
    seen_nodes: set[int] = set()
    todo: list[Node] = [root] if root is not None else []
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            keys: dict[Hashable, Node] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        first = keys[key.value].start_mark.line + 1
                        problems.append(
                            problem_at(
                                file,
                                key,
                                f"duplicate key {key.value!r} "
                                f"(first on line {first}); keep only one",
                            )
                        )
                    keys.setdefault(key.value, key)
                todo.extend((key, value))
        elif isinstance(node, SequenceNode):
            todo.extend(node.value)
    problems.sort(key=lambda p: (p.line, p.col))
    return problems


def find_node(node: Node | None, loc: Sequence[int | str]) -> tuple[Node | None, bool]:
    """The node at pydantic-style `loc` under `node`, or its deepest existing ancestor.

    The flag is True when the whole path was found.
    """
    current = node
    steps = list(loc)
    for i, step in enumerate(steps):
        if isinstance(current, MappingNode):
            # The last of duplicate keys, since that is the one whose value the data holds.
            pair = next((kv for kv in reversed(current.value) if _key_is(kv[0], step)), None)
            if pair is None:
                return current, False
            if i + 1 < len(steps) and steps[i + 1] == "[key]":
                return pair[0], True
            current = pair[1]
        elif isinstance(current, SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(current.value):
                return current, False
            current = current.value[step]
        elif step == "[key]":
            return current, True
        else:
            return current, False
    return current, True


def key_node(node: Node | None, key: str) -> Node | None:
    """The key node of `key` in mapping `node`, if present."""
    if isinstance(node, MappingNode):
        for k, _ in reversed(node.value):
            if _key_is(k, key):
                found: Node = k
                return found
    return None


def _key_is(key: Node, step: int | str) -> bool:
    return isinstance(key, ScalarNode) and key.value == str(step)


def expression_position(node: Node, lines: Sequence[str], line: int, col: int) -> tuple[int, int]:
    """Map a 1-based (line, col) inside the expression held by scalar `node` to the file."""
    start, end = node.start_mark, node.end_mark
    style = getattr(node, "style", None)
    if style in (None, "'", '"') and start.line == end.line:
        return start.line + 1, start.column + (0 if style is None else 1) + col
    if style == "|":
        first = start.line + 1
        while first < len(lines) and not lines[first].strip():
            first += 1
        target = first + line - 1
        if first < len(lines) and target < len(lines):
            indent = len(lines[first]) - len(lines[first].lstrip(" "))
            return target + 1, indent + col
    return start.line + 1, start.column + 1
