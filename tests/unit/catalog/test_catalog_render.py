"""Rendering: escaping, sandbox, caps, locales."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog, EmailContent, Match, RenderError, load_catalog

NOW = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)


def order_match(catalog: Catalog, **data: Any) -> Match:
    payload: dict[str, Any] = {
        "order_id": "A-<17>",
        "total": 12.5,
        "customer": {"email": "bob@example.com", "name": "Bob & <b>Co</b>"},
        "items": [{"name": 'Tea & "Cake"', "quantity": 2, "price": 6.25}],
    }
    payload.update(data)
    [match] = catalog.evaluate({"id": "e", "type": "order.created", "data": payload}, NOW)
    return match


def test_html_is_escaped_text_is_not(example_path: Path) -> None:
    catalog = load_catalog(example_path)
    content = catalog.render(order_match(catalog))
    assert content.subject == "Your order A-<17> is confirmed"
    assert content.html is not None
    assert "Thank you, Bob &amp; &lt;b&gt;Co&lt;/b&gt;!" in content.html
    assert "<td>Tea &amp; &#34;Cake&#34;</td>" in content.html
    assert "<strong>12.50 EUR</strong>" in content.html
    assert "activity on your account" in content.html  # the shared partial
    assert "Thank you, Bob & <b>Co</b>!" in content.text
    assert '- 2 x Tea & "Cake": 6.25 EUR' in content.text
    assert "We have received your order A-<17>." in content.text
    assert "<strong>A-&lt;17&gt;</strong>" in content.html
    assert "&amp;" not in content.text and "&lt;" not in content.text


def _one_template(make_catalog: Any, valid_rules: str, body: str, **limits: Any) -> Catalog:
    root = make_catalog(
        {
            "rules.yaml": valid_rules.replace("template: welcome", "template: t"),
            "templates/t/email/subject.txt.j2": "Hi {{ name }}\n",
            "templates/t/email/body.txt.j2": body,
        }
    )
    return load_catalog(root, **limits)


def _render(catalog: Catalog, name: Any = "Ann") -> Any:
    event = {"id": "e", "type": "user.registered", "data": {"email": "a@x.io", "name": name}}
    [match] = catalog.evaluate(event, NOW)
    return catalog.render(match)


def test_text_only_template_has_no_html(make_catalog: Any, valid_rules: str) -> None:
    content = _render(_one_template(make_catalog, valid_rules, "Hello {{ name }}, {{ recipient }}"))
    assert (content.subject, content.html, content.text) == ("Hi Ann", None, "Hello Ann, a@x.io")


def test_a_set_in_one_part_never_reaches_another_or_the_callers_context(
    make_catalog: Any, valid_rules: str
) -> None:
    # The parts of one render share one data dict (globals and context merged once): a
    # top-level `set` must stay in its own part, and the caller's mapping must not change.
    root = make_catalog(
        {
            "rules.yaml": valid_rules.replace("template: welcome", "template: t"),
            "templates/t/email/subject.txt.j2": "{% set name = 'Eve' %}Hi {{ name }}\n",
            "templates/t/email/body.html.j2": "<p>{{ name }}</p>{% set name = 'Mallory' %}",
            "templates/t/email/body.txt.j2": "Hello {{ name }}",
        }
    )
    catalog = load_catalog(root)
    context = {"name": "Ann"}
    first = catalog.templates.render_content("t", "email", context)
    again = catalog.templates.render_content("t", "email", context)
    assert context == {"name": "Ann"}
    for content in (first, again):
        assert isinstance(content, EmailContent)
        assert (content.subject, content.html, content.text) == (
            "Hi Eve",
            "<p>Ann</p>",
            "Hello Ann",
        )


def test_subject_newlines_are_collapsed(make_catalog: Any, valid_rules: str) -> None:
    content = _render(_one_template(make_catalog, valid_rules, "x"), name="Ann\r\nBcc: eve@x.io")
    assert content.subject == "Hi Ann Bcc: eve@x.io"


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__ }}",
        "{% set x = [1] %}{{ x.append(2) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_render_errors(make_catalog: Any, valid_rules: str, body: str) -> None:
    catalog = _one_template(make_catalog, valid_rules, body)
    with pytest.raises(RenderError) as info:
        _render(catalog)
    assert info.value.template_id == "t"
    assert info.value.channel == "email"
    assert info.value.part == "body.txt.j2"
    assert "Fix:" in str(info.value)


def test_undefined_variable_is_a_render_error_with_line(
    make_catalog: Any, valid_rules: str
) -> None:
    catalog = _one_template(make_catalog, valid_rules, "Hello\n\n{{ missing_var }}\n")
    with pytest.raises(RenderError, match="missing_var") as info:
        _render(catalog)
    assert info.value.line == 3
    assert "variables" in str(info.value)


def test_output_size_cap(make_catalog: Any, valid_rules: str) -> None:
    body = "{% for i in range(1000) %}0123456789{% endfor %}"
    catalog = _one_template(make_catalog, valid_rules, body, max_output_bytes=9_999)
    with pytest.raises(RenderError, match="exceeds the cap of 9999 bytes"):
        _render(catalog)
    roomy = _one_template(make_catalog, valid_rules, body, max_output_bytes=10_000)
    assert len(_render(roomy).text) == 10_000


def test_output_size_cap_counts_utf8_bytes(make_catalog: Any, valid_rules: str) -> None:
    body = "{% for i in range(600) %}é{% endfor %}"  # 600 characters, 1200 bytes
    catalog = _one_template(make_catalog, valid_rules, body, max_output_bytes=1000)
    with pytest.raises(RenderError, match="exceeds the cap"):
        _render(catalog)


def test_render_time_cap(make_catalog: Any, valid_rules: str) -> None:
    body = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    catalog = _one_template(make_catalog, valid_rules, body, max_render_seconds=0.05)
    with pytest.raises(RenderError, match="time limit"):
        _render(catalog)


def test_locale_fallback_chain(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog(
        {
            "rules.yaml": valid_rules.replace("template: welcome", "template: t"),
            "templates/t/email/subject.txt.j2": "Hi",
            "templates/t/email/body.txt.j2": "Hello {{ name }}",
            "templates/t/email/de/subject.txt.j2": "Hallo",
            "templates/t/email/de/body.txt.j2": "Hallo {{ name }}",
        }
    )
    catalog = load_catalog(root)
    context = {"name": "Ann"}
    assert catalog.render_email("t", context, "de_AT").text == "Hallo Ann"
    assert catalog.render_email("t", context, "de").subject == "Hallo"
    assert catalog.render_email("t", context, "fr-FR").text == "Hello Ann"
    assert catalog.render_email("t", context).text == "Hello Ann"


def test_unknown_template_and_non_email_channel(example_path: Path) -> None:
    catalog = load_catalog(example_path)
    with pytest.raises(RenderError, match="no such template"):
        catalog.render_email("nope", {})
    match = order_match(catalog).model_copy(update={"channel": "sms"})
    with pytest.raises(RenderError, match="no such template for this channel"):
        catalog.render(match)


def test_error_inside_a_partial_names_the_partial(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog(
        {
            "rules.yaml": valid_rules.replace("template: welcome", "template: t"),
            "templates/t/email/subject.txt.j2": "Hi",
            "templates/t/email/body.txt.j2": "a\n{% include '_p/x.txt.j2' %}\n",
            "templates/_p/x.txt.j2": "one\ntwo {{ 1 / 0 }}\n",
        }
    )
    with pytest.raises(RenderError, match="ZeroDivisionError") as info:
        load_catalog(root).render_email("t", {})
    assert (info.value.part, info.value.line) == ("body.txt.j2 (in _p/x.txt.j2)", 2)
