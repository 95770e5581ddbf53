"""build_message: MIME structure, deterministic ids, headers, and what it refuses."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import PermanentSendError, ProcessorError, RetryableSendError
from schemas.settings import SmtpSettings
from tests.fuzz import examples

from .helpers import make


def test_build_message_structure_and_headers() -> None:
    msg = make(headers={"List-Unsubscribe": "<https://example.com/u/1>, <mailto:u@example.com>"})
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert "ünïcödé" in parts[0].get_content()
    assert "<b>42</b>" in parts[1].get_content()
    assert msg["Message-ID"] == "<n-1@tidings.local>"
    assert msg["X-Tidings-Notification-Id"] == "n-1"
    assert msg["From"] == "tidings <notifications@tidings.local>"
    assert msg["To"] == "jane@example.com"
    assert msg["Date"].datetime is not None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_without_html_the_message_is_plain_text() -> None:
    msg = make(html=None)
    assert msg.get_content_type() == "text/plain"
    assert "ünïcödé" in msg.get_content()


def test_message_id_is_deterministic_and_uses_the_domain() -> None:
    settings = SmtpSettings(message_id_domain="mail.example.com")
    a, b = make("abc.123", settings=settings), make("abc.123", settings=settings)
    assert a["Message-ID"] == b["Message-ID"] == "<abc.123@mail.example.com>"


def test_no_unsubscribe_headers_unless_given() -> None:
    assert make()["List-Unsubscribe"] is None
    assert make()["List-Unsubscribe-Post"] is None


def test_mailto_only_unsubscribe_gets_no_one_click_header() -> None:
    msg = make(headers={"List-Unsubscribe": "<mailto:unsub@example.com>"})
    assert msg["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert msg["List-Unsubscribe-Post"] is None


def test_display_name_recipient_is_accepted() -> None:
    assert make(to="Jane Doe <jane@example.com>")["To"].addresses[0].addr_spec == (
        "jane@example.com"
    )


def test_subject_line_breaks_are_folded_not_injected() -> None:
    msg = make(subject="Hello\r\nBcc: victim@example.com\x00\u2028!")
    assert msg["Subject"] == "Hello Bcc: victim@example.com !"
    assert msg["Bcc"] is None


@pytest.mark.parametrize(
    "to",
    [
        "not-an-address",
        "jane@example.com\r\nBcc: x@example.com",
        "jane@example.com\n",
        "a@example.com, b@example.com",
        "@example.com",
        "",
        "a@",
        "x@[1.2.3",  # makes the stdlib parser raise AttributeError
        "a@b (unterminated comment",
        "a@exa\x01mple.com",
        "Group: a@example.com, b@example.com;",
        "Group:;",
    ],
)
def test_bad_recipient_is_permanent(to: str) -> None:
    with pytest.raises(PermanentSendError) as info:
        make(to=to)
    assert info.value.code == "invalid_address"
    assert "fix" in str(info.value)


@pytest.mark.parametrize(
    "headers",
    [{"Message-ID": "<x@y>"}, {"bad name": "v"}, {"X-Ok": "a\r\nBcc: x@example.com"}],
)
def test_bad_or_reserved_header_is_permanent(headers: dict[str, str]) -> None:
    with pytest.raises(PermanentSendError) as info:
        make(headers=headers)
    assert info.value.code == "invalid_header"


def test_notification_id_that_cannot_form_a_message_id_is_permanent() -> None:
    with pytest.raises(PermanentSendError) as info:
        make("has space")
    assert info.value.code == "invalid_notification_id"


def test_bad_message_id_domain_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="MESSAGE_ID_DOMAIN"):
        make(settings=SmtpSettings(message_id_domain="bad domain"))


def test_bad_from_address_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="from_address"):
        make(settings=SmtpSettings(from_address="not an address"))


def test_errors_pickle_with_their_fields() -> None:
    err = pickle.loads(pickle.dumps(RetryableSendError("m", code="c", retry_after_s=3.0)))
    assert (type(err), err.code, err.message, err.retry_after_s) == (
        RetryableSendError, "c", "m", 3.0,
    )  # fmt: skip
    assert isinstance(err, ProcessorError)


_FUZZ = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_FUZZ
@given(to=st.text(max_size=60) | st.emails().map(lambda e: f"Näme <{e}>"))
def test_any_recipient_is_either_accepted_or_permanent(to: str) -> None:
    try:
        msg = make(to=to)
    except PermanentSendError as exc:
        assert exc.code == "invalid_address"
        return
    assert len(msg["To"].addresses) == 1
    assert b"\r\nBcc:" not in msg.as_bytes()
    msg.as_bytes()  # what SmtpSender serialises must not fail later


@_FUZZ
@given(
    subject=st.text(max_size=200),
    text=st.text(max_size=500),
    html=st.none() | st.text(max_size=500),
    header=st.text(max_size=80),
)
def test_any_content_builds_or_refuses_the_header(
    subject: str, text: str, html: str | None, header: str
) -> None:
    try:
        msg = make(subject=subject, text=text, html=html, headers={"X-Campaign": header})
    except PermanentSendError as exc:
        assert exc.code == "invalid_header"
        return
    assert msg["Message-ID"] == "<n-1@tidings.local>"
    assert not any(ord(c) < 32 for c in str(msg["Subject"]))
    msg.as_bytes()
