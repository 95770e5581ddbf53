"""The pure half of provider callbacks: URL reconstruction, correlation, form → status event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from processors.channels.sms import (
    twilio_signature,
    validate_twilio_signature,
    with_notification_id,
)
from schemas.notification import Notification, notification_id
from schemas.settings import TidingsSettings
from schemas.status import build_status
from streams.app import STAGES, default_stages
from streams.http.callbacks import (
    callback_url,
    callback_url_problems,
    notification_ref,
    redact,
    signed_url,
    twilio_event,
    twilio_providers,
)

NID = notification_id("urn:shop", "evt-1", "password-reset", "+14155552345", "sms")
NOW = datetime(2026, 11, 21, 7, 42, 51, tzinfo=UTC)


def make_notification(**kw: Any) -> Notification:
    base: dict[str, Any] = {
        "id": NID, "event_id": "evt-1", "event_source": "urn:shop",
        "event_type": "user.password_reset", "tenant": "acme", "rule_id": "password-reset",
        "rule_version": 3, "template_id": "password-reset", "template_version": "9f1c",
        "catalog_version": "c0ffee", "channel": "sms", "recipient": "+14155552345",
        "attempt": 2, "event_time_ms": 1795246970820,
    }  # fmt: skip
    base.update(kw)
    return Notification.model_validate(base)


def twilio_settings(**callbacks: Any) -> TidingsSettings:
    sms = [
        {"kind": "twilio", "name": "twilio", "account_sid": "AC1", "auth_token": "tok",
         "from_number": "+15005550006",
         "status_callback_url": "https://hooks.example.com/callbacks/twilio/twilio"},
        {"kind": "twilio", "name": "backup", "account_sid": "AC2", "auth_token": "tok2",
         "from_number": "+15005550007"},
    ]  # fmt: skip
    return TidingsSettings.model_validate({"channels": {"sms": sms}, "callbacks": callbacks})


# ------------------------------------------------------------------ URLs


def test_signed_url_is_the_public_base_plus_the_raw_target() -> None:
    target = f"/callbacks/twilio/twilio?nid={NID}"
    assert signed_url("https://hooks.example.com/", target) == f"https://hooks.example.com{target}"
    assert signed_url("https://x.example/tidings", target) == f"https://x.example/tidings{target}"


def test_callback_url_round_trips_through_the_signature() -> None:
    # What the provider sends as StatusCallback is exactly what the endpoint reconstructs.
    configured = callback_url("https://hooks.example.com", "twilio")
    assert configured == "https://hooks.example.com/callbacks/twilio/twilio"
    sent_to = with_notification_id(configured, NID)
    form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    sig = twilio_signature("tok", sent_to, form)
    u = urlsplit(sent_to)  # what the request line carries: path and query
    rebuilt = signed_url("https://hooks.example.com", f"{u.path}?{u.query}")
    assert rebuilt == sent_to
    assert validate_twilio_signature("tok", rebuilt, form, sig)


def test_public_base_defaults_to_host_and_port() -> None:
    assert TidingsSettings().callbacks.base_url() == "http://127.0.0.1:8088"
    assert twilio_settings(host="::1", port=9000).callbacks.base_url() == "http://[::1]:9000"
    s = twilio_settings(public_url="https://hooks.example.com/")
    assert s.callbacks.base_url() == "https://hooks.example.com"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"nid": NID}, NID),
        ({"nid": NID.upper()}, NID),
        ({"nid": "not-a-uuid"}, None),
        ({"nid": ""}, None),
        ({}, None),
    ],
)
def test_notification_ref(query: dict[str, str], expected: str | None) -> None:
    assert notification_ref(query) == expected


def test_twilio_providers_by_name() -> None:
    assert sorted(twilio_providers(twilio_settings().channels.sms)) == ["backup", "twilio"]


def test_callback_url_problems_name_the_fix() -> None:
    [problem] = callback_url_problems(twilio_settings(public_url="https://hooks.example.com"))
    assert "'backup'" in problem
    assert "https://hooks.example.com/callbacks/twilio/backup" in problem
    assert callback_url_problems(TidingsSettings()) == [
        "no Twilio provider in channels.sms and no callbacks.unsubscribe_secrets: "
        "the callbacks endpoint has nothing to serve"
    ]
    unsubscribe = TidingsSettings.model_validate({"callbacks": {"unsubscribe_secrets": ["s" * 32]}})
    assert callback_url_problems(unsubscribe) == []


# ------------------------------------------------------------------ form → status


def test_delivered_carries_every_contract_field() -> None:
    n = make_notification()
    ev = twilio_event(
        {"MessageSid": "SMabc", "MessageStatus": "delivered", "AccountSid": "AC1"},
        n, provider="twilio", attempt=2, now=NOW,
    )  # fmt: skip
    assert ev is not None
    assert ev == build_status(
        n, "delivered", stage="callbacks", attempt=2, provider="twilio",
        provider_message_id="SMabc", now=NOW,
    )  # fmt: skip
    assert ev.type == "notification.delivered"
    assert ev.source == "tidings/callbacks"
    assert ev.id == str(uuid.uuid5(uuid.UUID("6f1b2a52-8e55-4c1e-9c43-1d7f3f2f6a10"),
                                   f"{NID}\x1fdelivered\x1f2"))  # fmt: skip
    d = ev.data
    assert (d.tenant, d.rule_id, d.rule_version, d.template_version) == (
        "acme", "password-reset", 3, "9f1c",
    )  # fmt: skip
    assert d.error is None


def test_a_repeated_callback_gives_the_same_status_id() -> None:
    form = {"MessageSid": "SMabc", "MessageStatus": "delivered"}
    n = make_notification()
    first = twilio_event(form, n, provider="twilio", attempt=1)
    again = twilio_event(form, n, provider="twilio", attempt=1)
    assert first is not None and again is not None
    assert first.id == again.id


def test_undelivered_is_failed_with_twilios_error_code() -> None:
    form = {"MessageSid": "SMabc", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    ev = twilio_event(form, make_notification(), provider="backup", attempt=1)
    assert ev is not None
    assert ev.type == "notification.failed"
    assert ev.data.provider == "backup"
    assert ev.data.error is not None
    assert ev.data.error.code == "twilio_30003"
    assert "SMabc" in ev.data.error.message
    assert "https://www.twilio.com/docs/api/errors/30003" in ev.data.error.message


def test_failed_without_a_code_names_the_status() -> None:
    form = {"MessageSid": "SMabc", "MessageStatus": "failed"}
    ev = twilio_event(form, make_notification(), provider="twilio", attempt=1)
    assert ev is not None and ev.data.error is not None
    assert ev.data.error.code == "twilio_failed"
    assert "without an error code" in ev.data.error.message


@pytest.mark.parametrize("status", ["accepted", "queued", "sending", "sent", "receiving"])
def test_intermediate_statuses_emit_nothing(status: str) -> None:
    form = {"MessageSid": "SMabc", "MessageStatus": status}
    assert twilio_event(form, make_notification(), provider="twilio", attempt=1) is None


# ------------------------------------------------------------------ stage wiring


def test_run_without_stages_includes_callbacks_only_when_enabled() -> None:
    assert "callbacks" in STAGES
    assert default_stages(TidingsSettings()) == ("route", "deliver", "audit", "recipients")
    enabled = TidingsSettings.model_validate({"callbacks": {"enabled": True}})
    assert default_stages(enabled) == ("route", "deliver", "audit", "recipients", "callbacks")


def test_urls_in_logs_and_answers_never_carry_credentials() -> None:
    assert redact("https://u:secret@h.example:8443/cb?x=1") == "https://***@h.example:8443/cb?x=1"
    assert redact("https://h.example/cb") == "https://h.example/cb"
