"""X-Twilio-Signature validation with Twilio's published vectors, and callback → status mapping."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from processors.channels.sms import (
    TwilioSmsProvider,
    callback_status,
    twilio_signature,
    validate_twilio_signature,
    with_notification_id,
)
from schemas.content import SmsContent
from tests.unit.processors.fakes import notification

URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def params(caller: str) -> dict[str, str]:
    return {
        "CallSid": "CA1234567890ABCDE", "Caller": caller, "Digits": "1234",
        "From": caller, "To": "+18005551212",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("caller", "signature"),
    [
        # twilio.com/docs/usage/security worked example
        ("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc="),
        # twilio-php / twilio-csharp RequestValidatorTest
        ("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ],
)
def test_published_vectors(caller: str, signature: str) -> None:
    assert twilio_signature("12345", URL, params(caller)) == signature
    assert validate_twilio_signature("12345", URL, params(caller), signature)


def test_tampering_fails() -> None:
    good = "GvWf1cFY/Q7PnoempGyD5oXAezc="
    p = params("+14158675310")
    assert not validate_twilio_signature("12345", URL, {**p, "Digits": "9999"}, good)
    assert not validate_twilio_signature("12345", URL + "&x=1", p, good)
    assert not validate_twilio_signature("54321", URL, p, good)
    assert not validate_twilio_signature("12345", URL, p, None)
    assert not validate_twilio_signature("12345", URL, p, "")


def test_port_variants_validate_as_twilio_libraries_do() -> None:
    p = params("+14158675310")
    sig = twilio_signature("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", p)
    assert validate_twilio_signature("12345", URL, p, sig)


def test_repeated_parameters_are_sorted() -> None:
    sig = twilio_signature("12345", URL, {"Digits": ["5678", "1234"], "Sid": "CA123"})
    assert sig == twilio_signature("12345", URL, {"Digits": ["1234", "5678"], "Sid": "CA123"})


@pytest.mark.parametrize(
    ("status", "mapped"),
    [
        ("delivered", "delivered"),
        ("failed", "failed"),
        ("undelivered", "failed"),
        ("queued", None),
        ("sent", None),
    ],
)
def test_callback_status(status: str, mapped: str | None) -> None:
    assert callback_status({"MessageStatus": status, "MessageSid": "SM1"}) == mapped


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://t.example/cb", "https://t.example/cb?nid=N"),
        ("https://t.example/cb?a=1&b=%20x", "https://t.example/cb?a=1&b=%20x&nid=N"),
        ("https://t.example/cb?nid=old&a=1", "https://t.example/cb?a=1&nid=N"),
        ("https://t.example:8443/cb#rc=2&ct=1000", "https://t.example:8443/cb?nid=N#rc=2&ct=1000"),
    ],
)
def test_with_notification_id_keeps_the_query_and_fragment(url: str, expected: str) -> None:
    assert with_notification_id(url, "N") == expected


def test_form_status_callback_carries_the_notification_id() -> None:
    p = TwilioSmsProvider(
        account_sid="AC1", auth_token=SecretStr("t"), from_number="+15005550006",
        status_callback_url="https://t.example/callbacks/twilio/twilio?tenant=acme",
    )  # fmt: skip
    form = p.form(notification("0d5e0c4e-6f0b-5b7e-9a55-7f8a1f0e3c21"), SmsContent(text="hi"))
    assert form["StatusCallback"] == (
        "https://t.example/callbacks/twilio/twilio?tenant=acme"
        "&nid=0d5e0c4e-6f0b-5b7e-9a55-7f8a1f0e3c21"
    )
    without = TwilioSmsProvider(account_sid="AC1", auth_token=SecretStr("t"), from_number="+1")
    assert "StatusCallback" not in without.form(notification(), SmsContent(text="hi"))


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="exactly one of from_number"):
        TwilioSmsProvider(account_sid="AC1", auth_token=SecretStr("t"))
    with pytest.raises(ValueError, match="must start with 'AC'"):
        TwilioSmsProvider(account_sid="XX", auth_token=SecretStr("t"), from_number="+1")
