"""Per-channel rendering: content models, SMS segments, JSON parts, Babel filters, sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from catalog import Catalog, CatalogLoadError, RenderError, load_catalog
from catalog.i18n import plural as plural_filter
from catalog.i18n import render_locale
from catalog.sms import segments
from schemas.content import InAppContent, PushContent, SlackContent, SmsContent, WebhookContent

RULE = """\
rules:
  - id: r1
    version: 1
    events: [user.registered]
    recipients: [{user: event.data.id}]
    channels: [%s]
    template: t
    category: c
    variables: {name: event.data.name}
"""


def one(make_catalog: Any, channel: str, files: dict[str, str], **limits: Any) -> Catalog:
    spec = {"rules.yaml": RULE % channel}
    spec.update({f"templates/t/{channel}/{name}": text for name, text in files.items()})
    return load_catalog(make_catalog(spec), **limits)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("gsm7", 1)),
        ("a" * 160, ("gsm7", 1)),
        ("a" * 161, ("gsm7", 2)),
        ("a" * 306, ("gsm7", 2)),
        ("a" * 307, ("gsm7", 3)),
        ("€" * 80, ("gsm7", 1)),  # extension table: two septets each
        ("€" * 81, ("gsm7", 2)),
        ("ä" * 160, ("gsm7", 1)),
        ("ł" * 70, ("ucs2", 1)),
        ("ł" * 71, ("ucs2", 2)),
        ("😀" * 35, ("ucs2", 1)),  # a surrogate pair is two UTF-16 units
        ("😀" * 36, ("ucs2", 2)),
    ],
)
def test_sms_segments(text: str, expected: tuple[str, int]) -> None:
    assert segments(text) == expected


def test_every_channel_renders_its_model(make_catalog: Any) -> None:
    ctx = {"name": "Ann <3", "recipient": "u1"}
    sms = one(make_catalog, "sms", {"text.txt.j2": "Hi {{ name }}\n"})
    assert sms.render_content("t", "sms", ctx) == SmsContent(text="Hi Ann <3", segments=1)
    push = one(
        make_catalog,
        "push",
        {
            "title.txt.j2": "Hi\n{{ name }}",
            "body.txt.j2": "Body {{ name }}\n",
            "data.json.j2": '{"n": {{ name | tojson }}}',
        },
    )
    assert push.render_content("t", "push", ctx) == PushContent(
        title="Hi Ann <3", body="Body Ann <3", data={"n": "Ann <3"}
    )
    inapp = one(make_catalog, "inapp", {"title.txt.j2": "T", "body.txt.j2": "B {{ name }}"})
    assert inapp.render_content("t", "inapp", ctx) == InAppContent(title="T", body="B Ann <3")
    slack = one(
        make_catalog,
        "slack",
        {"text.txt.j2": "*{{ name }}*", "blocks.json.j2": '[{"type": "divider"}]'},
    )
    assert slack.render_content("t", "slack", ctx) == SlackContent(
        text="*Ann <3*", blocks=[{"type": "divider"}]
    )
    hook = one(make_catalog, "webhook", {"body.json.j2": '{"who": {{ name | tojson }}}'})
    assert hook.render_content("t", "webhook", ctx) == WebhookContent(body={"who": "Ann <3"})


def test_sms_over_the_segment_limit_is_a_render_error(make_catalog: Any) -> None:
    cat = one(make_catalog, "sms", {"text.txt.j2": "{{ name }}"}, max_sms_segments=1)
    assert cat.render_content("t", "sms", {"name": "a" * 160}).segments == 1  # type: ignore[union-attr]
    with pytest.raises(RenderError, match="needs 2 UCS2 segments, more than the limit of 1"):
        cat.render_content("t", "sms", {"name": "ł" * 71})


def test_babel_spaces_do_not_force_ucs2(make_catalog: Any) -> None:
    cat = one(make_catalog, "sms", {"de/text.txt.j2": "{{ 5 | money('EUR') }}", "text.txt.j2": "x"})
    content = cat.render_content("t", "sms", {}, "de")
    assert content == SmsContent(text="5,00 €", segments=1)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"body.json.j2": '{"a": {{ name }}}'}, "not valid JSON"),
        ({"body.json.j2": "[1]"}, "the JSON is a list, not a dict"),
    ],
)
def test_bad_json_parts(make_catalog: Any, files: dict[str, str], message: str) -> None:
    cat = one(make_catalog, "webhook", files)
    with pytest.raises(RenderError, match=message) as info:
        cat.render_content("t", "webhook", {"name": "x"})
    assert info.value.part == "body.json.j2"
    assert "Fix:" in str(info.value)


def test_push_data_must_be_strings(make_catalog: Any) -> None:
    files = {"title.txt.j2": "t", "body.txt.j2": "b", "data.json.j2": '{"n": 1}'}
    with pytest.raises(RenderError, match="push data values must be strings"):
        one(make_catalog, "push", files).render_content("t", "push", {})


def test_missing_default_locale_and_missing_part(make_catalog: Any) -> None:
    root = make_catalog(
        {
            "rules.yaml": RULE % "push",
            "templates/t/push/de/title.txt.j2": "T",
            "templates/t/push/de/body.txt.j2": "B",
            "templates/t/sms/text.txt.j2": "x",
            "templates/t/sms/de/txt.txt.j2": "x",
        }
    )
    with pytest.raises(CatalogLoadError) as info:
        load_catalog(root)
    text = str(info.value)
    assert f"{root}/templates/t/push: translations exist but the default locale is missing" in text
    assert f"{root}/templates/t/sms/de/txt.txt.j2: unexpected sms template file" in text


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (None, "€1,234.50 | Jan 8, 2026 | 2 parcels | 1 parcel"),
        ("de", "1.234,50 € | 08.01.2026 | 2 Pakete | 1 Paket"),
        ("de-AT", "€ 1.234,50 | 08.01.2026 | 2 Pakete | 1 Paket"),
        ("de_AT", "€ 1.234,50 | 08.01.2026 | 2 Pakete | 1 Paket"),
    ],
)
def test_babel_filters_follow_the_locale(
    make_catalog: Any, locale: str | None, expected: str
) -> None:
    line = "{{ 1234.5 | money('EUR') }} | {{ '2026-01-08T12:00:00Z' | date }} | "
    en = (
        line
        + "{{ 2 }} {{ 2 | plural('parcel', 'parcels') }} | 1 {{ 1 | plural('parcel', 'parcels') }}"
    )
    de = (
        line + "{{ 2 }} {{ 2 | plural('Paket', 'Pakete') }} | 1 {{ 1 | plural('Paket', 'Pakete') }}"
    )
    cat = one(make_catalog, "sms", {"text.txt.j2": en, "de/text.txt.j2": de})
    content = cat.render_content("t", "sms", {}, locale)
    assert content.text.replace("\xa0", " ") == expected  # type: ignore[union-attr]


def test_plural_uses_cldr_forms() -> None:
    token = render_locale.set("pl")
    try:
        forms = {"few": "pliki", "many": "plików"}
        assert [plural_filter(n, "plik", "pliku", **forms) for n in (1, 3, 5)] == [
            "plik",
            "pliki",
            "plików",
        ]
    finally:
        render_locale.reset(token)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{{ ''.__class__ }}", "sandbox refused|undefined"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox refused|undefined"),
        ("{{ range(10**9) | length }}", "oversized value"),
        ("{% for i in range(99999999999) %}{% endfor %}", "oversized value"),
        ("{{ 'x' * 10**9 }}", "repetition would build 1000000000 items"),
        ("{{ [0] * 10**8 }}", "repetition would build"),
        ("{{ 2 ** 100000 }}", "exponent 100000 is over the sandbox limit"),
        ("{% set s = 'ab' %}{{ (s * 1000) * 1000 }}", "over the output cap"),
    ],
)
def test_sandbox_escapes_are_render_errors(make_catalog: Any, body: str, message: str) -> None:
    cat = one(make_catalog, "sms", {"text.txt.j2": body})
    with pytest.raises(RenderError, match=message) as info:
        cat.render_content("t", "sms", {})
    assert info.value.channel == "sms" and "Fix:" in str(info.value)
