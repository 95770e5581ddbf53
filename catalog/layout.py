"""The file layout of a catalog's templates: reading, checking and hashing it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from catalog.channels import SPECS
from catalog.exceptions import Problem
from catalog.models import KNOWN_CHANNELS

__all__ = ["catalog_files", "check_layout", "digest", "read_tree", "template_version"]


def catalog_files(directory: Path) -> list[tuple[str, Path]]:
    """(posix path relative to `directory`, path) of every non-hidden file below it, sorted.

    Follows symlinked directories: a Kubernetes ConfigMap volume is a tree of symlinks
    into a hidden `..data` directory (skipped itself, like every name starting with a
    dot). A directory seen twice (a symlink loop) is walked once. Raises nothing; an
    unreadable directory is left out.
    """
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for d, subdirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = sorted(x for x in subdirs if not x.startswith("."))
        for f in files:
            if not f.startswith("."):
                path = Path(d, f)
                found.append((path.relative_to(directory).as_posix(), path))
    return sorted(found)


def read_tree(directory: Path) -> dict[str, bytes]:
    """Contents of every non-hidden file under `directory` by posix path; raises OSError."""
    return {rel: path.read_bytes() for rel, path in catalog_files(directory) if path.is_file()}


def digest(items: Iterable[tuple[str, bytes]]) -> str:
    """Short sha256 (12 hex digits) over (name, content) pairs; raises nothing."""
    h = hashlib.sha256()
    for name, data in items:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()[:12]


def check_layout(directory: Path, files: Mapping[str, bytes], problems: list[Problem]) -> None:
    """Report unknown channels, unexpected file names, missing parts and missing defaults."""
    present: dict[str, set[str]] = {}  # "<tid>/<channel>[/<locale>]" -> file names
    for name in files:
        bits = name.split("/")
        if bits[0].startswith("_") or len(bits) < 3:
            continue
        channel = bits[1]
        if channel not in KNOWN_CHANNELS:
            problems.append(
                Problem(
                    str(directory / name),
                    0,
                    0,
                    f"{channel!r} is not a channel; use one of {', '.join(sorted(KNOWN_CHANNELS))}",
                )
            )
            continue
        if not bits[-1].endswith(".j2"):
            continue
        allowed = SPECS[channel].files
        if len(bits) > 4 or bits[-1] not in allowed:
            problems.append(
                Problem(
                    str(directory / name),
                    0,
                    0,
                    f"unexpected {channel} template file; name it one of "
                    f"{', '.join(allowed)} directly under {channel}/ or {channel}/<locale>/",
                )
            )
            continue
        present.setdefault("/".join(bits[:-1]), set()).add(bits[-1])
    for folder, names in sorted(present.items()):
        channel = folder.split("/")[1]
        missing = [f for f in SPECS[channel].required if f not in names]
        if missing:
            problems.append(
                Problem(
                    str(directory / folder),
                    0,
                    0,
                    f"missing {', '.join(missing)}; every {channel} template needs "
                    f"{', '.join(SPECS[channel].required)}",
                )
            )
    defaults = {f for f in present if f.count("/") == 1}
    for variant in sorted({"/".join(f.split("/")[:2]) for f in present} - defaults):
        problems.append(
            Problem(
                str(directory / variant),
                0,
                0,
                "translations exist but the default locale is missing; add the default "
                f"files directly under {variant}/ (the end of every fallback chain)",
            )
        )


def template_version(
    template_id: str, files: Mapping[str, bytes], refs: Mapping[str, set[str]]
) -> str:
    """Hash of the template's own files and every partial/layout they reach; raises nothing."""
    own = [name for name in files if name.startswith(template_id + "/")]
    todo, used = list(own), set(own)
    while todo:
        for ref in refs.get(todo.pop(), ()):
            if ref not in used and ref in files:
                used.add(ref)
                todo.append(ref)
    return digest((name, files[name]) for name in sorted(used))
