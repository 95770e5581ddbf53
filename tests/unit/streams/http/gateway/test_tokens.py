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
     ({"tid": "nope", "sub": "u", "iat": 1, "exp": 2}, "has no HS256 inbox"),
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


# ---------------------------------------------------------------- ES256


def _p256() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    ).decode()
    spki = ser.PublicFormat.SubjectPublicKeyInfo
    return private, key.public_key().public_bytes(ser.Encoding.PEM, spki).decode()


def test_es256_tokens_verify_with_the_tenants_public_key_only() -> None:
    private, public = _p256()
    _, other_public = _p256()
    g = G.model_copy(update={"recipient_token_public_keys": {"acme": (other_public, public)}})
    token = sign_recipient_token(g, "acme", "u-es", 600, now=T0, private_key_pem=private)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    me = verify_recipient_token(g, token, now=T0)
    assert (me.tenant, me.recipient) == ("acme", "u-es")
    with pytest.raises(Problem, match="expired"):
        verify_recipient_token(g, token, now=T0 + 600)
    # Another key pair, or a tenant with no public key: refused, saying which.
    forged = sign_recipient_token(g, "acme", "u", 60, now=T0, private_key_pem=_p256()[0])
    with pytest.raises(Problem, match="not signed with a ES256 key"):
        verify_recipient_token(g, forged, now=T0)
    beta = sign_recipient_token(g, "beta", "u", 60, now=T0, private_key_pem=private)
    with pytest.raises(Problem, match="no ES256 inbox here"):
        verify_recipient_token(g, beta, now=T0)
    # HS256 still works beside it, with the secrets.
    assert verify_recipient_token(g, sign_recipient_token(g, "acme", "u", 60, now=T0),
                                  now=T0).recipient == "u"  # fmt: skip


def test_a_public_key_is_never_taken_for_an_hmac_secret() -> None:
    _, public = _p256()
    g = GatewaySettings(recipient_token_public_keys={"acme": (public,)})
    claims = {"tid": "acme", "sub": "u", "iat": int(T0), "exp": int(T0) + 60}
    import base64
    import hashlib
    import hmac
    import json as _json

    # The classic confusion attack: HS256 "signed" with the public PEM as the secret.
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(_json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(_json.dumps(claims).encode())
    sig = hmac.new(public.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(Problem, match="no HS256 inbox here"):
        verify_recipient_token(g, f"{head}.{body}.{b64(sig)}", now=T0)
    none = b64(_json.dumps({"alg": "none"}).encode())
    with pytest.raises(Problem, match="HS256 or ES256"):
        verify_recipient_token(g, f"{none}.{body}.", now=T0)


def test_the_settings_take_only_p256_public_keys() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, spki)
        .decode()
    )
    with pytest.raises(ValueError, match=r"\['acme'\]\[0\] is not an EC P-256 key"):
        GatewaySettings(recipient_token_public_keys={"acme": (p384,)})
    with pytest.raises(ValueError, match="not a PEM public key"):
        GatewaySettings(recipient_token_public_keys={"acme": ("-----BEGIN nonsense",)})


def test_the_cli_signs_es256_with_a_key_file(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json as _json
    from pathlib import Path

    from schemas.settings import load_settings
    from streams.cli.main import main

    private, public = _p256()
    pem = Path(str(tmp_path)) / "key.pem"
    pem.write_text(private)
    monkeypatch.setenv("TIDINGS_GATEWAY__RECIPIENT_TOKEN_PUBLIC_KEYS",
                       _json.dumps({"acme": [public]}))  # fmt: skip
    assert main(["tokens", "sign", "acme", "u-7", "--es256-key", str(pem)]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_recipient_token(load_settings().gateway, token).recipient == "u-7"
    assert main(["tokens", "sign", "acme", "u-7", "--es256-key", str(tmp_path) + "/none"]) == 2
    assert "cannot read the key" in capsys.readouterr().err
