"""Recipient tokens: signed, verified, refused with the reason (streams/http/gateway/tokens.py);
pure, with a fixed clock."""

from __future__ import annotations

import jwt
import pytest
from pydantic import SecretStr

from schemas.settings import GatewaySettings
from streams.http.gateway.problems import Problem
from streams.http.gateway.tokens import sign_recipient_token, verify_recipient_token

OLD, NEW = "o" * 32, "n" * 32
G = GatewaySettings(recipient_token_secrets={"acme": (SecretStr(NEW), SecretStr(OLD)),
                                             "beta": (SecretStr("b" * 32),)})  # fmt: skip
T0 = 1_800_000_000.0


def _refused(token: str, says: str, now: float = T0) -> None:
    with pytest.raises(Problem) as info:
        verify_recipient_token(G, token, now=now)
    assert info.value.status == 401 and says in info.value.detail, info.value.detail


def test_a_signed_token_verifies_until_it_expires() -> None:
    token = sign_recipient_token(G, "acme", "u-1", 600, now=T0)
    me = verify_recipient_token(G, token, now=T0 + 599)
    assert (me.tenant, me.recipient) == ("acme", "u-1")
    _refused(token, "expired", now=T0 + 600)


def test_any_listed_secret_verifies_so_secrets_rotate() -> None:
    old = jwt.encode({"tid": "acme", "sub": "u", "iat": int(T0), "exp": int(T0) + 60}, OLD,
                     algorithm="HS256")  # fmt: skip
    assert verify_recipient_token(G, old, now=T0).recipient == "u"


def test_another_tenants_secret_or_a_forged_one_is_refused() -> None:
    forged = jwt.encode({"tid": "acme", "sub": "u", "iat": int(T0), "exp": int(T0) + 60},
                        "b" * 32, algorithm="HS256")  # fmt: skip
    _refused(forged, "bad signature")
    beta = sign_recipient_token(G, "beta", "u", 60, now=T0)
    assert verify_recipient_token(G, beta, now=T0).tenant == "beta", "its own tenant, not acme"


@pytest.mark.parametrize(
    ("claims", "says"),
    [({"sub": "u", "iat": 1, "exp": 2}, "no `tid`"),
     ({"tid": "nope", "sub": "u", "iat": 1, "exp": 2}, "has no inbox"),
     ({"tid": "acme", "iat": int(T0), "exp": int(T0) + 60}, "sub"),
     ({"tid": "acme", "sub": "u", "iat": int(T0), "exp": int(T0) + 8 * 24 * 3600},
      "recipient_token_max_ttl_s"),
     ({"tid": "acme", "sub": "u", "iat": int(T0) + 10**8, "exp": int(T0) + 10**8 + 60},
      "in the future"),
     ({"tid": "acme", "sub": "u", "iat": "x", "exp": int(T0) + 60}, "must be numbers")],
)  # fmt: skip
def test_bad_claims_are_refused_with_the_reason(claims: dict[str, object], says: str) -> None:
    _refused(jwt.encode(claims, NEW, algorithm="HS256"), says)


def test_not_a_jwt_and_another_algorithm_are_refused() -> None:
    _refused("not.a.jwt", "not a JWT")
    _refused(jwt.encode({"tid": "acme", "sub": "u"}, NEW * 2, algorithm="HS512"), "HS256")


def test_signing_needs_a_secret_and_a_bounded_ttl() -> None:
    with pytest.raises(ValueError, match=r"no gateway\.recipient_token_secrets"):
        sign_recipient_token(G, "other", "u", 60)
    with pytest.raises(ValueError, match="ttl must be"):
        sign_recipient_token(G, "acme", "u", 10**9)


def test_short_secrets_are_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        GatewaySettings(recipient_token_secrets={"acme": (SecretStr("short"),)})


def test_the_cli_signs_with_the_configured_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from schemas.settings import load_settings
    from streams.cli.main import main

    monkeypatch.setenv("TIDINGS_GATEWAY__RECIPIENT_TOKEN_SECRETS", '{"acme": ["' + NEW + '"]}')
    assert main(["tokens", "sign", "acme", "u-9", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    me = verify_recipient_token(load_settings().gateway, token)
    assert (me.tenant, me.recipient) == ("acme", "u-9")
    assert main(["tokens", "sign", "other", "u-9"]) == 2
    assert "no gateway.recipient_token_secrets" in capsys.readouterr().err
