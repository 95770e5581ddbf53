"""X-Twilio-Signature validation with Twilio's published vectors, and callback → status mapping."""

from __future__ import annotations

import pytest

from processors.sms import (
    TwilioSmsProvider,
    callback_status,
    twilio_signature,
    validate_twilio_signature,
)

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


def test_config_errors_name_the_fix() -> None:
    from pydantic import SecretStr

    with pytest.raises(ValueError, match="exactly one of from_number"):
        TwilioSmsProvider(account_sid="AC1", auth_token=SecretStr("t"))
    with pytest.raises(ValueError, match="must start with 'AC'"):
        TwilioSmsProvider(account_sid="XX", auth_token=SecretStr("t"), from_number="+1")
