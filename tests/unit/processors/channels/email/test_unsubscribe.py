"""RFC 8058 unsubscribe links: signed tokens, rotation, age, and the headers of a mail."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import pytest

from processors.channels.email import (
    InvalidUnsubscribeToken,
    UnsubscribeLinks,
    UnsubscribeToken,
    fast_mime,
    sign_token,
    verify_token,
)
from tests.unit.processors.fakes import notification

OLD, NEW = b"o" * 32, b"n" * 32
TOKEN = UnsubscribeToken("acme", "u-1", "n-1", "marketing", "promo", 1_000_000)
DAY = 86400.0


def test_a_signed_token_verifies_to_what_was_signed() -> None:
    text = sign_token(NEW, TOKEN)
    assert verify_token([NEW], text, now_s=1_000_010, max_age_s=DAY) == TOKEN
    assert text.isascii() and "<" not in text and ">" not in text


def test_rotation_any_listed_secret_verifies() -> None:
    text = sign_token(OLD, TOKEN)
    assert verify_token([NEW, OLD], text, now_s=1_000_010, max_age_s=DAY) == TOKEN
    with pytest.raises(InvalidUnsubscribeToken, match="matches none"):
        verify_token([NEW], text, now_s=1_000_010, max_age_s=DAY)


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda t: t.replace(".", ""), "not <payload>.<mac>"),
        (lambda t: "A" + t, "matches none"),  # the payload changed: the MAC doesn't fit
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "matches none"),
        (lambda t: t + "." + t, "not <payload>.<mac>"),
        (lambda t: "x" * 3000 + "." + t.split(".")[1], "not <payload>.<mac>"),
    ],
)
def test_a_mangled_token_is_refused_saying_why(mangle: Callable[[str], str], why: str) -> None:
    text = mangle(sign_token(NEW, TOKEN))
    with pytest.raises(InvalidUnsubscribeToken, match=why):
        verify_token([NEW], text, now_s=1_000_010, max_age_s=DAY)


def test_an_old_link_is_refused() -> None:
    text = sign_token(NEW, TOKEN)
    with pytest.raises(InvalidUnsubscribeToken, match="2 days old"):
        verify_token([NEW], text, now_s=1_000_000 + 2 * DAY, max_age_s=DAY)


def test_no_secrets_refuses_everything() -> None:
    with pytest.raises(InvalidUnsubscribeToken, match=r"no callbacks\.unsubscribe_secrets"):
        verify_token([], sign_token(NEW, TOKEN), now_s=1_000_000, max_age_s=DAY)


def test_without_a_category_the_rule_is_opted_out_of() -> None:
    t = UnsubscribeToken("", "u", "n", None, "promo", 0)
    assert t.opt_out() == ("rule", "promo") and t.reason() == "opt-out:rule:promo"
    assert TOKEN.reason() == "opt-out:category:marketing"


def test_headers_only_for_directory_recipients_not_past_preferences() -> None:
    links = UnsubscribeLinks("https://notify.example.com/", NEW)
    user = notification(channel="email", recipient="a@example.com", user="u-1", tenant="acme",
                        category="marketing", rule_id="promo")  # fmt: skip
    [(name, value), post] = links.headers(user, now_s=1_000_000)
    assert name == "List-Unsubscribe"
    assert value.startswith("<https://notify.example.com/callbacks/unsubscribe/")
    assert post == ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    token = value[len("<https://notify.example.com/callbacks/unsubscribe/") : -1]
    got = verify_token([NEW], token, now_s=1_000_001, max_age_s=DAY)
    assert (got.tenant, got.user, got.notification_id, got.category) == (
        "acme", "u-1", user.id, "marketing",
    )  # fmt: skip
    assert links.headers(notification(channel="email", recipient="a@example.com")) == []
    assert links.headers(user.model_copy(update={"bypassed": "required-category:security"})) == []
    assert links.headers(user.model_copy(update={"priority": "critical"})) == []


def test_a_public_url_that_cannot_go_in_a_header_is_refused() -> None:
    with pytest.raises(ValueError, match="plain ASCII https URL"):
        UnsubscribeLinks("https://exämple.com", NEW)
    with pytest.raises(ValueError, match="plain ASCII https URL"):
        UnsubscribeLinks("https://example.com/a b", NEW)


def test_fast_mime_writes_the_headers_a_mail_client_reads() -> None:
    links = UnsubscribeLinks("https://notify.example.com", NEW)
    n = notification(channel="email", recipient="a@example.com", user="u-1", category="news")
    raw = fast_mime(
        notification_id="0b1c2d3e-0000-4000-8000-000000000001", from_header="T <t@example.com>",
        from_addr="t@example.com", to="a@example.com", subject="Hi", html=None, text="body",
        message_id_domain="example.com", headers=links.headers(n),
    )  # fmt: skip
    assert raw is not None
    msg = email.message_from_bytes(raw.data, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(msg["List-Unsubscribe"]).startswith("<https://notify.example.com/callbacks/")
    assert msg.get_content().strip() == "body"
