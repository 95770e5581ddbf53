"""What a template has to provide per channel, and how its rendered parts become Content.

Files live in `templates/<template-id>/<channel>/` (default locale) or
`templates/<template-id>/<channel>/<locale>/`. `.txt.j2` parts are plain text (never
escaped), `.html.j2` parts are HTML (autoescaped) and `.json.j2` parts must render to JSON
(write values with `{{ x | tojson }}`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog.exceptions import RenderError
from catalog.sms import segments
from schemas.content import (
    Content,
    EmailContent,
    InAppContent,
    PushContent,
    SlackContent,
    SmsContent,
    WebhookContent,
)

__all__ = ["DEFAULT_MAX_SMS_SEGMENTS", "SPECS", "ChannelSpec", "build_content"]

DEFAULT_MAX_SMS_SEGMENTS = 3
# Babel separates amounts and units with no-break spaces, which GSM-7 lacks: one of them
# would switch a whole SMS to UCS-2 (70 instead of 160 characters a segment).
_SMS_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " "})


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """The template files a channel accepts and the ones it requires."""

    files: tuple[str, ...]
    required: tuple[str, ...]


_PUSH = ChannelSpec(
    ("title.txt.j2", "body.txt.j2", "data.json.j2"), ("title.txt.j2", "body.txt.j2")
)
SPECS: dict[str, ChannelSpec] = {
    "email": ChannelSpec(
        ("subject.txt.j2", "body.html.j2", "body.txt.j2"), ("subject.txt.j2", "body.txt.j2")
    ),
    "sms": ChannelSpec(("text.txt.j2",), ("text.txt.j2",)),
    "push": _PUSH,
    "webpush": _PUSH,
    "slack": ChannelSpec(("text.txt.j2", "blocks.json.j2"), ("text.txt.j2",)),
    "webhook": ChannelSpec(("body.json.j2",), ("body.json.j2",)),
    "inapp": _PUSH,
}

# Renders one part by file name; None when the variant has no such file.
Render = Callable[[str], str | None]


def _line(text: str) -> str:
    # One line: a newline in an email Subject is header injection, in a title it is noise.
    return " ".join(text.split())


class _Parts:
    def __init__(self, template_id: str, channel: str, render: Render) -> None:
        self.template_id, self.channel, self.render = template_id, channel, render

    def text(self, name: str) -> str:
        out = self.render(name)
        if out is None:
            raise RenderError(
                self.template_id,
                self.channel,
                f"{name} is missing",
                f"add templates/{self.template_id}/{self.channel}/{name} "
                "(load_catalog checks this)",
                name,
            )
        return out

    def json(self, name: str, kind: type[Any], default: Any) -> Any:
        out = self.render(name)
        if out is None:
            return default
        try:
            value = json.loads(out)
        except ValueError as exc:
            raise RenderError(
                self.template_id,
                self.channel,
                f"the output is not valid JSON ({exc})",
                "write every value with `{{ value | tojson }}` so quotes and newlines are escaped",
                name,
            ) from None
        if not isinstance(value, kind):
            raise self.fail(name, f"the JSON is a {type(value).__name__}, not a {kind.__name__}")
        return value

    def fail(self, name: str, cause: str, fix: str | None = None) -> RenderError:
        return RenderError(
            self.template_id,
            self.channel,
            cause,
            fix or f"make {name} render a JSON value of the documented shape",
            name,
        )


def build_content(
    template_id: str, channel: str, render: Render, *, max_sms_segments: int
) -> Content:
    """Render every part of a channel's variant into its Content model; raises RenderError."""
    p = _Parts(template_id, channel, render)
    if channel == "email":
        return EmailContent(
            subject=_line(p.text("subject.txt.j2")),
            html=render("body.html.j2"),
            text=p.text("body.txt.j2"),
        )
    if channel == "sms":
        text = p.text("text.txt.j2").strip().translate(_SMS_SPACES)
        encoding, count = segments(text)
        if count > max_sms_segments:
            raise p.fail(
                "text.txt.j2",
                f"the SMS needs {count} {encoding.upper()} segments, more than the limit of "
                f"{max_sms_segments}",
                "shorten the text (UCS-2 characters such as emoji cut a segment to 70 "
                "characters) or raise load_catalog(max_sms_segments=...)",
            )
        return SmsContent(text=text, segments=count)
    if channel in ("push", "webpush", "inapp"):
        title, body = _line(p.text("title.txt.j2")), p.text("body.txt.j2").strip()
        data = p.json("data.json.j2", dict, {})
        if channel == "inapp":
            return InAppContent(title=title, body=body, data=data)
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        if bad:
            raise p.fail(
                "data.json.j2",
                f"push data values must be strings; {', '.join(map(repr, bad))} are not",
                "convert them in the template, e.g. `{{ n | string | tojson }}`",
            )
        return PushContent(title=title, body=body, data=data)
    if channel == "slack":
        blocks = p.json("blocks.json.j2", list, [])
        if not all(isinstance(b, dict) for b in blocks):
            raise p.fail("blocks.json.j2", "every Slack block must be a JSON object")
        return SlackContent(text=p.text("text.txt.j2").strip(), blocks=blocks)
    if channel == "webhook":
        body = p.json("body.json.j2", dict, None)
        if body is None:
            p.text("body.json.j2")  # raises: the required part is missing
        return WebhookContent(body=body or {})
    raise RenderError(
        template_id, channel, "the catalog has no renderer for this channel", "use another channel"
    )
