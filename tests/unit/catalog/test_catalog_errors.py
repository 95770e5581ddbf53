"""Every kind of catalog problem is reported, all at once, at its exact file:line:col."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catalog import CatalogLoadError, Problem, load_catalog


def problems_of(root: Path) -> list[str]:
    with pytest.raises(CatalogLoadError) as info:
        load_catalog(root)
    assert str(info.value).splitlines()[1:] == [str(p) for p in info.value.problems]
    return [str(p) for p in info.value.problems]


def edit(rules: str, old: str, new: str) -> str:
    assert old in rules
    return rules.replace(old, new, 1)


# VALID_RULES (conftest), by line:
#  1 rules:
#  2   - id: r1
#  3     version: 1
#  4     events: [user.registered]
#  5     recipients: [event.data.email]
#  6     channels: [email]
#  7     template: welcome
#  8     category: onboarding
#  9     variables:
# 10       name: event.data.name
CASES = [
    pytest.param(
        ("    channels: [email]\n", "    channels: [email\n"),
        # PyYAML notices the missing ']' only at the next ':'.
        "rules.yaml:7:13: YAML syntax error: while parsing a flow sequence expected ',' or ']', "
        "but got ':'; fix the YAML at this point",
        id="yaml-syntax",
    ),
    pytest.param(
        ("    category: onboarding\n", ""),
        "rules.yaml:2:5: rule 'r1': missing required field 'category'; add it",
        id="missing-field",
    ),
    pytest.param(
        ("    category: onboarding\n", "    category: onboarding\n    prority: high\n"),
        "rules.yaml:9:5: rule 'r1': unknown field 'prority'; did you mean 'priority'? (known "
        "fields: id, version, description, events, when, recipients, channels, "
        "channel_policy, template, priority, category, enabled, variables, idempotency_key, "
        "tenants, locale, recipient_when)",
        id="unknown-field",
    ),
    pytest.param(
        ("    version: 1\n", "    version: one\n"),
        "rules.yaml:3:14: rule 'r1', version: Input should be a valid integer (got 'one'); "
        "correct the value",
        id="wrong-type",
    ),
    pytest.param(
        ("    recipients:", "    when: event.data.age >= 18 && nope\n    recipients:"),
        "rules.yaml:5:35: rule 'r1', when: CEL error: undeclared reference to 'nope' "
        "(in container ''); fix the expression",
        id="cel-undeclared",
    ),
    pytest.param(
        ("    recipients:", "    when: \"event.data.age >= '18'\"\n    recipients:"),
        None,  # dyn >= string type-checks; listed to show it is *not* a load error
        id="cel-dyn-compare-ok",
    ),
    pytest.param(
        ("    recipients:", "    when: \"'yes'\"\n    recipients:"),
        "rules.yaml:5:12: rule 'r1', when: CEL error: expression yields string, but it must "
        "yield a bool; fix the expression",
        id="cel-non-bool-when",
    ),
    pytest.param(
        ("    recipients:", "    when: ' '\n    recipients:"),
        "rules.yaml:5:13: rule 'r1', when: CEL error: Syntax error: mismatched input '<EOF>' "
        "expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, "
        "NUM_UINT, STRING, BYTES, IDENTIFIER}; fix the expression",
        id="cel-blank-when",
    ),
    pytest.param(
        ("[event.data.email]", "[event.data.email, event.data.age > 1]"),
        "rules.yaml:5:36: rule 'r1', recipients.1: CEL error: expression yields bool, but it "
        "must yield a string or a list of strings; fix the expression",
        id="cel-bad-recipient-type",
    ),
    pytest.param(
        (
            "      name: event.data.name\n",
            "      name: |\n        event.data.name +\n          )\n",
        ),
        "rules.yaml:12:11: rule 'r1', variables.name: CEL error: Syntax error: mismatched input "
        "')' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, "
        "NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}; fix the expression",
        id="cel-block-scalar",
    ),
    pytest.param(
        ("[email]", "[email, pager]"),
        "rules.yaml:6:23: rule 'r1', channels.1: unknown channel 'pager'; use one of email, "
        "inapp, push, slack, sms, webhook, webpush (got 'pager'); correct the value",
        id="unknown-channel",
    ),
    pytest.param(
        ("[email]", "[email, sms]"),
        "rules.yaml:6:23: rule 'r1': template 'welcome' has no sms variant; add "
        "templates/welcome/sms/",
        id="template-without-channel-variant",
    ),
    pytest.param(
        ("template: welcome", "template: welcom"),
        "rules.yaml:7:15: rule 'r1': unknown template 'welcom'; create templates/welcom/ or "
        "use one of: infra-alert, order-confirmation, order-shipped, password-reset, "
        "payment-completed, payment-failed, welcome",
        id="unknown-template",
    ),
    pytest.param(
        ("    version: 1\n", "    version: 1\n    version: 2\n"),
        "rules.yaml:4:5: duplicate key 'version' (first on line 3); keep only one",
        id="duplicate-key",
    ),
    pytest.param(
        (
            "    variables:\n      name: event.data.name\n",
            "    variables:\n      name: event.data.name\n      1st: \"'x'\"\n",
        ),
        "rules.yaml:11:7: rule 'r1', variables.1st: variable name is not an identifier, so "
        "templates could not use it; use letters, digits and '_', not starting with a digit",
        id="bad-variable-name",
    ),
]


@pytest.mark.parametrize(("change", "expected"), CASES)
def test_located_problem(
    make_catalog: Any, valid_rules: str, change: tuple[str, str], expected: str | None
) -> None:
    root = make_catalog({"rules.yaml": edit(valid_rules, *change)})
    if expected is None:
        load_catalog(root)
        return
    assert problems_of(root) == [f"{root}/{expected}"]


def test_template_syntax_error_is_located(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog(
        {
            "rules.yaml": valid_rules,
            "templates/welcome/email/body.txt.j2": "Hello\n{{ name | nosuchfilter }}\n",
            "templates/welcome/email/body.html.j2": "<p>\n{% if name %}\n{{ name }}\n",
        }
    )
    tpl = f"{root}/templates/welcome/email"
    assert problems_of(root) == [
        f"{tpl}/body.html.j2:3:1: template syntax error: Unexpected end of template. Jinja was "
        "looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that "
        "needs to be closed is 'if'.; fix the template",
        f"{tpl}/body.txt.j2:2:1: template syntax error: No filter named 'nosuchfilter'.; fix "
        "the template",
    ]


def test_template_layout_problems(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog(
        {
            "rules.yaml": valid_rules,
            "templates/welcome/email/subjct.txt.j2": "typo",
            "templates/welcome/pager/body.txt.j2": "x",
            "templates/t2/email/body.txt.j2": "{% include 'nope.j2' %}",
        }
    )
    assert problems_of(root) == [
        f"{root}/templates/t2/email: missing subject.txt.j2; every email template needs "
        "subject.txt.j2, body.txt.j2",
        f"{root}/templates/t2/email/body.txt.j2:1:1: template 'nope.j2' is not in the catalog; "
        "reference it by its path under templates/ or create it",
        f"{root}/templates/welcome/email/subjct.txt.j2: unexpected email template file; name it "
        "one of subject.txt.j2, body.html.j2, body.txt.j2 directly under email/ or "
        "email/<locale>/",
        f"{root}/templates/welcome/pager/body.txt.j2: 'pager' is not a channel; use one of "
        "email, inapp, push, slack, sms, webhook, webpush",
    ]


def test_duplicate_rule_ids_across_files(make_catalog: Any, valid_rules: str) -> None:
    root = make_catalog({"rules.yaml": valid_rules, "rules/more.yaml": valid_rules})
    assert problems_of(root) == [
        f"{root}/rules/more.yaml:2:9: duplicate rule id 'r1' (first defined at "
        f"{root}/rules.yaml:2); rule ids must be unique across the catalog, rename one"
    ]


def test_every_problem_is_collected(make_catalog: Any, valid_rules: str) -> None:
    broken = valid_rules.replace("[email]", "[fax]").replace("welcome", "nope")
    broken = broken.replace("event.data.name", "event.data.name +") + "  - 42\n"
    root = make_catalog(
        {
            "rules.yaml": broken,
            "rules/a.yaml": "rules:\n  - id: [\n",
            "rules/b.yaml": "rulez: []\n",
            "templates/welcome/email/body.txt.j2": "{% endif %}",
        }
    )
    found = problems_of(root)
    assert [line.split(": ", 1)[0].removeprefix(f"{root}/") for line in found] == [
        "rules.yaml:6:16",  # unknown channel
        "rules.yaml:7:15",  # unknown template
        "rules.yaml:10:30",  # CEL syntax error
        "rules.yaml:11:5",  # rule is not a mapping
        "rules/a.yaml:3:1",  # YAML syntax error
        "rules/b.yaml:1:1",  # unknown top-level key
        "rules/b.yaml:1:1",  # missing rules:
        "templates/welcome/email/body.txt.j2:1:1",  # template syntax error
    ]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {},
            [
                "{root}: no rule files; add rules.yaml or rules/*.yaml with a top-level `rules:` "
                "list"
            ],
        ),
        ({"rules.yaml": ""}, ["{root}/rules.yaml: file is empty; add a top-level `rules:` list"]),
        (
            {"rules.yaml": "- a\n"},
            ["{root}/rules.yaml:1:1: top level must be a mapping with a `rules:` list"],
        ),
        (
            {"rules.yaml": "rules: {}\n"},
            ["{root}/rules.yaml:1:8: `rules` must be a list of rules (`- id: ...` items)"],
        ),
        (
            {"rules.yaml": b"rules: \xff\n"},
            [
                "{root}/rules.yaml: not UTF-8 ('utf-8' codec can't "
                "decode byte 0xff in position 7: invalid start "
                "byte); save the file as UTF-8"
            ],
        ),
        (
            {"rules.yaml": "rules:\n  - when: 2024-02-30\n"},
            [
                "{root}/rules.yaml:2:11: YAML syntax error: invalid timestamp value: day is out of "
                "range for month; fix the YAML at this point"
            ],
        ),
        (
            {"rules.yaml": "rules: [\x07]\n"},
            ["{root}/rules.yaml:1:9: character U+0007 is not allowed in YAML; remove it"],
        ),
    ],
)
def test_file_level_problems(
    make_catalog: Any, files: dict[str, str | bytes], expected: list[str]
) -> None:
    root = make_catalog({})
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (root / name).write_bytes(data)
    assert problems_of(root) == [e.format(root=root) for e in expected]


def test_missing_templates_and_missing_directory(tmp_path: Path, valid_rules: str) -> None:
    (tmp_path / "rules.yaml").write_text(valid_rules)
    found = problems_of(tmp_path)
    assert f"{tmp_path}/templates: templates directory is missing or empty" in found[-1]
    assert problems_of(tmp_path / "nope") == [
        f"{tmp_path}/nope: catalog directory not found; pass a directory holding rules.yaml "
        "and templates/"
    ]


def test_problem_format() -> None:
    assert str(Problem("a.yaml", 3, 7, "bad")) == "a.yaml:3:7: bad"
    assert str(Problem("a.yaml", 0, 0, "bad")) == "a.yaml: bad"
    err = CatalogLoadError([Problem("a", 1, 2, "x"), Problem("b", 3, 4, "y")])
    assert str(err) == "catalog is invalid: 2 problems\na:1:2: x\nb:3:4: y"
