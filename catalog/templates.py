"""Jinja2 templates of a catalog: sandboxed, strict, compiled once at load, capped at render.

Layout: `templates/<template-id>/<channel>/<file>.j2` is the default locale and
`templates/<template-id>/<channel>/<locale>/<file>.j2` a translation (chosen by the fallback
chain `de-AT -> de -> default`). Directories whose name starts with `_` hold shared partials
for `{% include %}`/`{% extends %}` (layouts and partials) and are not templates themselves.
Which files each channel takes is in catalog/channels.py; Babel filters in catalog/i18n.py.
"""

from __future__ import annotations

import contextvars
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateNotFound, meta
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from catalog.channels import DEFAULT_MAX_SMS_SEGMENTS, build_content
from catalog.exceptions import Problem, RenderError
from catalog.i18n import FILTERS, render_locale
from catalog.layout import check_layout, digest, read_tree, template_version
from catalog.models import KNOWN_CHANNELS, EmailContent
from schemas.content import Content

__all__ = [
    "DEFAULT_LOCALE",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_RENDER_SECONDS",
    "DEFAULT_MAX_SMS_SEGMENTS",
    "EMAIL_FILES",
    "TemplateSet",
    "digest",
    "load_templates",
    "read_tree",
]

DEFAULT_LOCALE = "default"
DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024
DEFAULT_MAX_RENDER_SECONDS = 2.0
EMAIL_FILES = {"subject": "subject.txt.j2", "html": "body.html.j2", "text": "body.txt.j2"}
# Repetition (`'x' * n`, `[0] * n`) is checked before it allocates; `**` is bounded so
# `10 ** 10 ** 9` can't spin the CPU before the deadline check gets a chance.
_MAX_EXPONENT = 1000

# Per render, so one shared environment can serve renders on several threads/tasks.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("tidings_render_deadline")

# Parts: file name -> compiled template, for one (template, channel, locale).
Parts = dict[str, Template]


class _RenderLimit(Exception):
    pass


class _Sources(BaseLoader):
    # Sources are read at load time so rendering never touches the disk and a catalog
    # version always renders the same bytes; the real path makes tracebacks name the file.
    def __init__(self, sources: Mapping[str, tuple[str, str]]) -> None:
        self._sources = sources

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        try:
            source, filename = self._sources[template]
        except KeyError:
            raise TemplateNotFound(template) from None
        return source, filename, lambda: True


class _Sandbox(ImmutableSandboxedEnvironment):
    # Every call a template makes (range, filters' callables, methods) checks the render
    # deadline, so nested loops can't run unbounded even when they emit no output.
    intercepted_binops = frozenset({"*", "**"})
    max_output: int = DEFAULT_MAX_OUTPUT_BYTES

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if sized and len(seq) * n > self.max_output:
                    raise _RenderLimit(
                        f"repetition would build {len(seq) * n} items, over the output "
                        f"cap of {self.max_output} bytes"
                    )
            return left * right
        if isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise _RenderLimit(f"exponent {right} is over the sandbox limit of {_MAX_EXPONENT}")
        return left**right

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = _deadline.get(None)
        if deadline is not None and time.monotonic() > deadline:
            raise _RenderLimit("render time limit exceeded")
        return super().call(__context, __obj, *args, **kwargs)


def _autoescape(name: str | None) -> bool:
    return bool(name and name.endswith((".html.j2", ".htm.j2")))


def _locale_key(name: str) -> str:
    return name.replace("_", "-").lower()


def _locale_chain(locale: str | None) -> list[str]:
    if not locale:
        return [DEFAULT_LOCALE]
    parts = _locale_key(locale).split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)] + [DEFAULT_LOCALE]


class TemplateSet:
    """The compiled templates of one catalog version."""

    def __init__(
        self,
        variants: dict[tuple[str, str], dict[str, Parts]],
        versions: dict[str, str],
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        max_render_seconds: float = DEFAULT_MAX_RENDER_SECONDS,
        names: Mapping[str, str] | None = None,
        *,
        max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
        default_locale: str = "en",
    ) -> None:
        self._variants = variants
        self._versions = versions
        self.max_output_bytes = max_output_bytes
        self.max_render_seconds = max_render_seconds
        self.max_sms_segments = max_sms_segments
        self.default_locale = default_locale
        # Template file path -> its name under templates/, to point render errors at a line.
        self._names = dict(names or {})
        self._globals: dict[Template, dict[str, Any]] = {}

    @property
    def ids(self) -> frozenset[str]:
        """Every template id in the catalog."""
        return frozenset(self._versions)

    def channels(self, template_id: str) -> frozenset[str]:
        """Channels template `template_id` has files for (empty if unknown); raises nothing."""
        return frozenset(ch for tid, ch in self._variants if tid == template_id)

    def version(self, template_id: str) -> str:
        """Short sha256 of the template's files and the partials it uses; raises KeyError."""
        return self._versions[template_id]

    def locales(self, template_id: str, channel: str) -> tuple[str, ...]:
        """Locales the variant has files for, `default` first; empty if unknown."""
        found = self._variants.get((template_id, channel), {})
        return tuple(sorted(found, key=lambda k: (k != DEFAULT_LOCALE, k)))

    def render_email(
        self, template_id: str, context: Mapping[str, Any], locale: str | None = None
    ) -> EmailContent:
        """Render the email variant of `template_id`; raises RenderError."""
        content = self.render_content(template_id, "email", context, locale)
        if not isinstance(content, EmailContent):  # build_content maps email to EmailContent
            raise RenderError(template_id, "email", "not an email", "report this as a bug")
        return content

    def render_content(
        self,
        template_id: str,
        channel: str,
        context: Mapping[str, Any],
        locale: str | None = None,
    ) -> Content:
        """Render the `channel` variant of `template_id` for `locale`; raises RenderError.

        The files come from the first locale of the chain (`de-AT -> de -> default`) that
        has them; the Babel filters format for `locale` itself (or the default locale).
        """
        parts = self._parts(template_id, channel, locale)
        token = render_locale.set(locale or self.default_locale)
        # The parts' globals merged with the context once per call, not once per part: Jinja's
        # own `generate` copies both for every part (a third of the render time, measured).
        merged: dict[int, dict[str, Any]] = {}
        try:

            def render(name: str) -> str | None:
                template = parts.get(name)
                if template is None:
                    return None
                base = self._globals_of(template)
                parent = merged.get(id(base))
                if parent is None:
                    parent = merged[id(base)] = {**base, **context}
                return self._render(template_id, channel, template, parent)

            return build_content(
                template_id, channel, render, max_sms_segments=self.max_sms_segments
            )
        finally:
            render_locale.reset(token)

    def _parts(self, template_id: str, channel: str, locale: str | None) -> Parts:
        locales = self._variants.get((template_id, channel))
        if locales is None:
            raise RenderError(
                template_id,
                channel,
                "the catalog has no such template for this channel",
                f"add templates/{template_id}/{channel}/ or point the rule at another template",
            )
        for key in _locale_chain(locale):
            if key in locales:
                return locales[key]
        raise RenderError(
            template_id,
            channel,
            f"no locale in the chain {_locale_chain(locale)} exists",
            f"add default files directly under templates/{template_id}/{channel}/",
        )

    def _globals_of(self, template: Template) -> dict[str, Any]:
        # A plain dict of the template's globals (a ChainMap over the environment's, which
        # is slow to copy); the environment is not changed after load.
        g = self._globals.get(template)
        if g is None:
            g = self._globals[template] = dict(template.globals)
        return g

    def _render(
        self, template_id: str, channel: str, template: Template, parent: dict[str, Any]
    ) -> str:
        """One part, with `parent` (globals and context, shared, never changed) as its data."""
        cap = self.max_output_bytes
        token = _deadline.set(time.monotonic() + self.max_render_seconds)
        try:
            deadline = _deadline.get()
            chunks: list[str] = []
            size = 0
            for chunk in _generate(template, parent):
                # Characters never outnumber UTF-8 bytes, so this early check is safe.
                size += len(chunk)
                if size > cap:
                    raise _RenderLimit(f"output exceeds the cap of {cap} bytes")
                if time.monotonic() > deadline:
                    raise _RenderLimit("render time limit exceeded")
                chunks.append(chunk)
            out = "".join(chunks)
            if len(out.encode("utf-8", "surrogatepass")) > cap:
                raise _RenderLimit(f"output exceeds the cap of {cap} bytes")
            return out
        except Exception as exc:
            cause, fix = _explain(exc, self)
            where, line = self._template_line(exc)
            part = Path(template.name or "?").name
            if where is not None and where != template.name:
                part = f"{part} (in {where})"
            raise RenderError(template_id, channel, cause, fix, part, line) from exc
        finally:
            _deadline.reset(token)

    def _template_line(self, exc: BaseException) -> tuple[str | None, int | None]:
        stack = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in stack if f.filename in self._names]
        if not frames:
            return None, None
        return self._names[frames[-1].filename], frames[-1].lineno


def _generate(template: Template, parent: dict[str, Any]) -> Iterator[str]:
    """`Template.generate` without its two copies of the data: `parent` is used as it is."""
    try:
        yield from template.root_render_func(template.new_context(parent, shared=True))
    except Exception:
        # Re-raised with the traceback pointing at template lines, as `generate` does.
        template.environment.handle_exception()


def _explain(exc: Exception, templates: TemplateSet) -> tuple[str, str]:
    if isinstance(exc, _RenderLimit):
        return str(exc), (
            "shorten the template or the data it loops over, or raise the catalog's "
            f"max_output_bytes ({templates.max_output_bytes}) / max_render_seconds "
            f"({templates.max_render_seconds})"
        )
    if isinstance(exc, OverflowError):
        return f"the sandbox refused an oversized value ({exc})", (
            "loop over at most 100000 items (`range` is capped) and keep numbers small"
        )
    if isinstance(exc, SecurityError):
        return f"the sandbox refused an operation ({exc})", (
            "remove it from the template; templates may only read the values they are given"
        )
    if isinstance(exc, UndefinedError):
        return f"undefined value ({exc})", (
            "add it to the rule's `variables`, or guard it with `{% if x is defined %}` "
            "or `x | default(...)`"
        )
    return f"{type(exc).__name__}: {exc}", "correct the template or the rule variables it uses"


def load_templates(
    directory: Path,
    files: Mapping[str, bytes] | None = None,
    *,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    max_render_seconds: float = DEFAULT_MAX_RENDER_SECONDS,
    max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS,
    default_locale: str = "en",
) -> tuple[TemplateSet, list[Problem]]:
    """Compile the templates in `files` (else read `directory`); returns problems, raises none."""
    problems: list[Problem] = []
    if files is None:
        if not directory.is_dir():
            problems.append(
                Problem(
                    str(directory),
                    0,
                    0,
                    "templates directory not found; create "
                    "templates/<template-id>/<channel>/ with the channel's files "
                    "(see docs/catalog.md)",
                )
            )
            return TemplateSet({}, {}, max_output_bytes, max_render_seconds), problems
        files = read_tree(directory)
    sources: dict[str, tuple[str, str]] = {}
    for name, data in files.items():
        if name.endswith(".j2"):
            try:
                sources[name] = (data.decode("utf-8"), str(directory / name))
            except UnicodeDecodeError as exc:
                problems.append(
                    Problem(
                        str(directory / name),
                        0,
                        0,
                        f"template is not UTF-8 ({exc}); save it as UTF-8",
                    )
                )
    env = _Sandbox(
        loader=_Sources(sources),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        auto_reload=False,
        cache_size=-1,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.max_output = max_output_bytes
    env.filters.update(FILTERS)
    compiled, refs = _compile_all(env, sources, problems)
    variants: dict[tuple[str, str], dict[str, Parts]] = {}
    for name, template in compiled.items():
        bits = name.split("/")
        if len(bits) in (3, 4) and not bits[0].startswith("_") and bits[1] in KNOWN_CHANNELS:
            locale = _locale_key(bits[2]) if len(bits) == 4 else DEFAULT_LOCALE
            variants.setdefault((bits[0], bits[1]), {}).setdefault(locale, {})[bits[-1]] = template
    check_layout(directory, files, problems)
    versions = {
        tid: template_version(tid, files, refs)
        for tid in {name.split("/")[0] for name in files if "/" in name}
        if not tid.startswith("_")
    }
    names = {filename: name for name, (_, filename) in sources.items()}
    templates = TemplateSet(
        variants,
        versions,
        max_output_bytes,
        max_render_seconds,
        names,
        max_sms_segments=max_sms_segments,
        default_locale=default_locale,
    )
    return templates, problems


def _compile_all(
    env: Environment, sources: Mapping[str, tuple[str, str]], problems: list[Problem]
) -> tuple[dict[str, Template], dict[str, set[str]]]:
    compiled: dict[str, Template] = {}
    refs: dict[str, set[str]] = {}
    for name, (source, filename) in sources.items():
        try:
            compiled[name] = env.get_template(name)
            used = {r for r in meta.find_referenced_templates(env.parse(source)) if r}
        except TemplateSyntaxError as exc:
            problems.append(
                Problem(
                    filename,
                    exc.lineno or 0,
                    1,
                    f"template syntax error: {exc.message}; fix the template",
                )
            )
            continue
        except (RecursionError, MemoryError):
            problems.append(Problem(filename, 0, 0, "template nests too deeply; simplify it"))
            continue
        refs[name] = used
        for ref in sorted(used - sources.keys()):
            line = next((i for i, text in enumerate(source.splitlines(), 1) if ref in text), 0)
            problems.append(
                Problem(
                    filename,
                    line,
                    1,
                    f"template {ref!r} is not in the catalog; "
                    "reference it by its path under templates/ or create it",
                )
            )
    return compiled, refs
