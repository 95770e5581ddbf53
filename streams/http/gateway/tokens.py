"""Recipient tokens: how a recipient's app proves who it is to the inbox API; pure.

A recipient token is a JWT (RFC 7519) signed HS256 with one of the tenant's
`gateway.recipient_token_secrets`, or ES256 with a private key whose public half is one of
the tenant's `gateway.recipient_token_public_keys` (then tidings holds no secret that can
sign), claims `tid` (tenant), `sub` (recipient id), `iat`, `exp`
(required; at most `gateway.recipient_token_max_ttl_s` after `iat`). The customer's backend
signs it (any JWT library; `tidings tokens sign` for trying it) and hands it to its app, so
tidings never sees the customer's own user sessions: Knock's "enhanced security" mode,
Novu's subscriber HMAC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from schemas.settings import GatewaySettings
from streams.http.gateway.problems import Problem

__all__ = ["RecipientIdentity", "sign_recipient_token", "verify_recipient_token"]

_ALGORITHMS = ("HS256", "ES256")
_LEEWAY_S = 60  # clock skew allowed between the signing backend and the gateway


@dataclass(frozen=True, slots=True)
class RecipientIdentity:
    """Who a verified token speaks for."""

    tenant: str
    recipient: str


def sign_recipient_token(
    settings: GatewaySettings, tenant: str, recipient: str, ttl_s: int, *,
    now: float | None = None, private_key_pem: str | None = None,
) -> str:  # fmt: skip
    """A token for (tenant, recipient), valid `ttl_s` seconds: HS256 with the tenant's first
    secret, or ES256 with `private_key_pem` (EC P-256). Raises ValueError when the tenant
    has no secret (HS256), the key is not one, or `ttl_s` is past the maximum."""
    secrets = settings.recipient_token_secrets.get(tenant)
    if private_key_pem is None and not secrets:
        raise ValueError(f"tenant {tenant!r} has no gateway.recipient_token_secrets")
    if not 0 < ttl_s <= settings.recipient_token_max_ttl_s:
        raise ValueError(
            f"ttl must be 1..{settings.recipient_token_max_ttl_s} s "
            "(gateway.recipient_token_max_ttl_s)"
        )
    iat = int(now if now is not None else time.time())
    claims = {"tid": tenant, "sub": recipient, "iat": iat, "exp": iat + ttl_s}
    if private_key_pem is not None:
        try:
            return jwt.encode(claims, private_key_pem, algorithm="ES256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ValueError(f"not an EC P-256 private key in PEM ({exc})") from None
    assert secrets  # checked above
    return jwt.encode(claims, secrets[0].get_secret_value(), algorithm="HS256")


def _refused(detail: str) -> Problem:
    return Problem(
        401, "Invalid recipient token", detail, headers={"WWW-Authenticate": 'Bearer realm="inbox"'}
    )


def verify_recipient_token(
    settings: GatewaySettings, token: str, *, now: float | None = None
) -> RecipientIdentity:
    """The identity a token proves; raises Problem 401 saying why it doesn't."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _refused(f"not a JWT ({exc})") from None
    alg = header.get("alg")
    if alg not in _ALGORITHMS:
        raise _refused(f"alg {str(alg)[:16]!r}: recipient tokens are HS256 or ES256")
    tenant = unverified.get("tid")
    if not isinstance(tenant, str):
        raise _refused("the token has no `tid` (tenant) claim")
    # The algorithm picks the keys: a public key is never tried as an HMAC secret.
    keys: tuple[str, ...] = (
        tuple(s.get_secret_value() for s in settings.recipient_token_secrets.get(tenant, ()))
        if alg == "HS256"
        else settings.recipient_token_public_keys.get(tenant, ())
    )
    if not keys:
        setting = "secrets" if alg == "HS256" else "public keys"
        raise _refused(
            f"tenant {tenant[:64]!r} has no {alg} inbox here (no recipient token {setting})"
        )
    at = now if now is not None else time.time()
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options={
                    "require": ["exp", "iat", "sub", "tid"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _refused(str(exc)) from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise _refused("`iat` and `exp` must be numbers (seconds since the epoch)")
        if exp <= at:
            raise _refused("the token has expired: ask your backend for a new one")
        if iat > at + _LEEWAY_S:
            raise _refused("the token is issued in the future (`iat`): check the signer's clock")
        if (
            exp - iat > settings.recipient_token_max_ttl_s
            or exp - at > settings.recipient_token_max_ttl_s
        ):
            raise _refused(
                f"the token lives longer than gateway.recipient_token_max_ttl_s = "
                f"{settings.recipient_token_max_ttl_s} s"
            )
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise _refused("`sub` must be the recipient id")
        return RecipientIdentity(tenant, claims["sub"])
    raise _refused(f"bad signature: not signed with a {alg} key of this tenant")
