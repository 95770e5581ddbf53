"""Provider chains are built from settings; nothing connects while building."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from processors.channels.push.apns import APNS_PRODUCTION, APNS_SANDBOX, ApnsProvider
from processors.channels.push.deadtoken_store import PostgresDeadTokens
from processors.channels.push.fcm import FcmProvider
from processors.channels.push.webpush import WebPushProvider
from processors.failover import Failover
from processors.registry import build_providers
from schemas.providers import (
    InAppProviderSettings,
    ProviderBase,
    ProviderSettings,
    SlackProviderSettings,
    SmtpProviderSettings,
)
from schemas.settings import TidingsSettings
from tests.peers.fcm import make_key


def test_defaults_give_email_from_smtp_settings_and_the_inbox() -> None:
    providers = build_providers(TidingsSettings())
    assert sorted(providers) == ["email", "inapp"]
    email = providers["email"]
    assert isinstance(email, Failover)
    assert [p.name for p in email.providers] == ["smtp"]


def test_a_chain_per_channel_in_order() -> None:
    s = TidingsSettings(
        channels={
            "email": [{"kind": "smtp", "name": "a"}, {"kind": "smtp", "name": "b", "port": 2}],
            "webhook": [{"kind": "webhook", "secrets": ["whsec_" + "A" * 32]}],
            "slack": [{"kind": "slack"}],
        }
    )
    providers = build_providers(s)
    assert tuple(providers) == ("email", "slack", "webhook", "inapp"), "in CHANNELS order"
    chain = providers["email"]
    assert isinstance(chain, Failover)
    assert [p.name for p in chain.providers] == ["a", "b"]


def test_unknown_kind_and_wrong_channel_are_refused() -> None:
    with pytest.raises(ValidationError, match="kind"):
        TidingsSettings(channels={"email": [{"kind": "carrier-pigeon"}]})
    s = TidingsSettings(channels={"email": [{"kind": "slack"}]})
    with pytest.raises(ValueError, match="serves channel 'slack', not 'email'"):
        build_providers(s)


# --------------------------------------------------------------- push, Web Push, limits

_EC = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)
_RSA = make_key()[0]
_ACCOUNT = json.dumps({
    "type": "service_account", "project_id": "demo-project", "private_key_id": "kid-1",
    "private_key": _RSA, "client_email": "tidings@demo-project.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
})  # fmt: skip
_APNS = {"kind": "apns", "team_id": "TEAM123456", "key_id": "KEY1234567", "topic": "com.ex.app"}
_WEBPUSH = {"kind": "webpush", "subject": "mailto:ops@example.com"}


def _chain(s: TidingsSettings, channel: str) -> Failover:
    chain = build_providers(s)[channel]
    assert isinstance(chain, Failover)
    return chain


def _files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "fcm": tmp_path / "sa.json",
        "apns": tmp_path / "AuthKey.p8",
        "vapid": tmp_path / "v.pem",
    }
    out["fcm"].write_text(_ACCOUNT)
    out["apns"].write_text(_EC)
    out["vapid"].write_text(_EC)
    return out


def test_push_and_webpush_providers_from_key_files(tmp_path: Path) -> None:
    f = _files(tmp_path)
    s = TidingsSettings(
        channels={
            "push": [
                {"kind": "fcm", "service_account_file": str(f["fcm"])},
                {**_APNS, "private_key_file": str(f["apns"]), "environment": "sandbox"},
            ],
            "webpush": [{**_WEBPUSH, "vapid_private_key_file": str(f["vapid"]), "ttl_s": 60}],
        }
    )
    push, webpush = _chain(s, "push"), _chain(s, "webpush")
    fcm, apns = push.providers
    assert isinstance(fcm, FcmProvider) and isinstance(apns, ApnsProvider)
    assert (fcm.name, apns.name) == ("fcm", "apns")
    assert fcm._url == "https://fcm.googleapis.com/v1/projects/demo-project/messages:send"
    assert apns._base == APNS_SANDBOX
    [wp] = webpush.providers
    assert isinstance(wp, WebPushProvider)
    assert (wp.name, wp._ttl, wp._subject) == ("webpush", 60, "mailto:ops@example.com")
    assert len(wp.public_key) == 87  # base64url of a 65-byte uncompressed P-256 point


def test_inline_keys_and_base_url_override() -> None:
    s = TidingsSettings(
        channels={
            "push": [
                {"kind": "fcm", "name": "f", "service_account_json": _ACCOUNT,
                 "base_url": "https://fcm.test"},
                {**_APNS, "private_key": _EC, "base_url": "https://apns.test"},
                {**_APNS, "name": "apns-prod", "private_key": _EC},
            ],
            "webpush": [{**_WEBPUSH, "vapid_private_key": _EC}],
        }
    )  # fmt: skip
    fcm, apns, prod = _chain(s, "push").providers
    assert isinstance(fcm, FcmProvider) and isinstance(apns, ApnsProvider)
    assert fcm._url.startswith("https://fcm.test/v1/projects/demo-project/")
    assert apns._base == "https://apns.test"
    assert isinstance(prod, ApnsProvider) and prod._base == APNS_PRODUCTION
    assert isinstance(_chain(s, "webpush").providers[0], WebPushProvider)


def test_push_chains_report_dead_tokens_to_postgres_without_connecting() -> None:
    s = TidingsSettings(
        postgres={"port": 1},  # nothing listens there: building must not connect
        channels={"push": [{**_APNS, "private_key": _EC}]},
    )
    [apns] = _chain(s, "push").providers
    assert isinstance(apns, ApnsProvider)
    assert isinstance(apns._on_dead, PostgresDeadTokens)


def test_max_concurrency_defaults_to_32_on_every_kind_and_limits_the_failover() -> None:
    kinds = typing.get_args(typing.get_args(ProviderSettings)[0])
    assert {k.model_fields["kind"].default for k in kinds} == {
        "smtp", "webhook", "slack", "twilio", "inapp", "fcm", "apns", "webpush",
    }  # fmt: skip
    for k in kinds:
        assert issubclass(k, ProviderBase) and k.model_fields["max_concurrency"].default == 32
    s = TidingsSettings(
        channels={
            "email": [{"kind": "smtp", "name": "a", "max_concurrency": 5}, {"kind": "smtp"}],
            "webpush": [{**_WEBPUSH, "vapid_private_key": _EC, "max_concurrency": 7}],
        }
    )
    # SMTP: never more slots than pooled connections (default pool_size 8).
    assert _chain(s, "email").limits == {"a": 5, "smtp": 8}
    assert _chain(s, "webpush").limits == {"webpush": 7}
    assert _chain(TidingsSettings(), "inapp").limits == {"inbox": 32}
    for bad in (0, 10001):
        with pytest.raises(ValidationError, match="max_concurrency"):
            TidingsSettings(channels={"slack": [{"kind": "slack", "max_concurrency": bad}]})


def test_existing_provider_defaults_are_unchanged() -> None:
    smtp = SmtpProviderSettings()
    assert (smtp.kind, smtp.name, smtp.pool_size, smtp.port) == ("smtp", "smtp", 8, 12525)
    assert SlackProviderSettings().allowed_hosts == ("hooks.slack.com",)
    assert InAppProviderSettings().name == "inbox"


def test_missing_key_file_names_the_setting_and_the_file(tmp_path: Path) -> None:
    gone = tmp_path / "nope" / "AuthKey.p8"
    s = TidingsSettings(channels={"push": [{**_APNS, "private_key_file": str(gone)}]})
    with pytest.raises(ValueError) as info:
        build_providers(s)
    msg = str(info.value)
    assert msg.startswith(f"channels.push[0].private_key_file = {gone}: cannot read the key file")
    assert "No such file or directory" in msg and "`private_key`" in msg


def test_invalid_key_material_names_the_setting(tmp_path: Path) -> None:
    not_json = tmp_path / "sa.json"
    not_json.write_text("-----BEGIN nonsense")
    cases: list[tuple[dict[str, object], str]] = [
        (
            {"push": [{"kind": "apns", "private_key": "AuthKey_ABC.p8", **_APNS}]},
            r"channels\.push\[0\]\.private_key: not an unencrypted PEM private key",
        ),
        (
            {"push": [{**_APNS, "private_key": make_key()[0]}]},  # RSA, APNs wants P-256
            r"channels\.push\[0\]\.private_key: not a P-256 \(prime256v1\) EC key",
        ),
        (
            {"push": [{"kind": "fcm", "service_account_file": str(not_json)}]},
            rf"channels\.push\[0\]\.service_account_file = {not_json}: .*download a JSON key",
        ),
        (
            {"webpush": [{**_WEBPUSH, "vapid_private_key": _RSA}]},
            r"channels\.webpush\[0\]\.vapid_private_key: not a P-256 .*openssl ecparam",
        ),
    ]
    for channels, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            build_providers(TidingsSettings(channels=channels))


def test_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    s = TidingsSettings(
        channels={"push": [{**_APNS, "private_key": _EC, "http": {"ca_file": str(ca)}}]}
    )
    with pytest.raises(ValueError, match=rf"channels\.push\[0\]\.http\.ca_file = {ca}: cannot"):
        build_providers(s)


def test_exactly_one_key_source_is_required(tmp_path: Path) -> None:
    f = _files(tmp_path)
    cases: list[tuple[dict[str, object], str, object, str, Path]] = [
        ({"kind": "fcm"}, "service_account_json", _ACCOUNT, "service_account_file", f["fcm"]),
        (_APNS, "private_key", _EC, "private_key_file", f["apns"]),
        (_WEBPUSH, "vapid_private_key", _EC, "vapid_private_key_file", f["vapid"]),
    ]
    for base, inline, key, file_field, path in cases:
        for given, extra in (("both", {inline: key, file_field: str(path)}), ("neither", {})):
            with pytest.raises(ValidationError) as info:
                TidingsSettings(channels={"push": [{**base, **extra}]})
            msg = str(info.value)
            assert f"set exactly one of `{inline}` and `{file_field}`, {given} given" in msg, msg


def test_webpush_subject_must_be_mailto_or_https() -> None:
    for subject in ("ops@example.com", "http://example.com", "mailto:", "https://"):
        with pytest.raises(ValidationError, match="must be a mailto: or https: URL"):
            TidingsSettings(
                channels={"webpush": [{**_WEBPUSH, "subject": subject, "vapid_private_key": _EC}]}
            )
    ok = {**_WEBPUSH, "subject": "https://example.com/contact", "vapid_private_key": _EC}
    assert isinstance(
        _chain(TidingsSettings(channels={"webpush": [ok]}), "webpush").providers[0],
        WebPushProvider,
    )
