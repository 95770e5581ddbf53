"""Gateway API keys: their format, their hash and their check; pure (no I/O).

A key is `tdk_<prefix>_<secret>`: `prefix` (12 lowercase hex characters) names the row of
`api_keys` (migration 0009), `secret` (43 base64url characters, 256 random bits) is shown
once and stored only as its SHA-256. A 256-bit random secret needs no slow hash: nothing
about it can be guessed from the digest. `ApiKeyStore` (keystore.py) reads the rows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "SCOPES",
    "ApiKey",
    "IssuedKey",
    "check_scopes",
    "issue_key",
    "parse_key",
    "secret_digest",
    "verify",
]

# What a key may do; `admin` may do all of it.
SCOPES = ("events:write", "recipients:write", "inbox:admin", "admin")
_KEY = re.compile(r"^tdk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, as the gateway checks it (no secret: its digest)."""

    prefix: str
    tenant: str
    scopes: tuple[str, ...]
    secret_sha256: bytes
    revoked_at: datetime | None = None
    name: str = ""

    def allows(self, scope: str) -> bool:
        """Whether the key holds `scope` (or `admin`)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: the row to store and the one text to hand out (once)."""

    key: ApiKey
    text: str


def secret_digest(secret: str) -> bytes:
    """SHA-256 of a key's secret, as stored."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def check_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    """`scopes` sorted and once each; raises ValueError naming an unknown one and the valid."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}: use {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return tuple(sorted(set(scopes)))


def issue_key(tenant: str, scopes: tuple[str, ...], name: str = "") -> IssuedKey:
    """A new random key for `tenant`; raises ValueError for unknown scopes."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(prefix, tenant, check_scopes(scopes), secret_digest(secret), name=name)
    return IssuedKey(key, f"tdk_{prefix}_{secret}")


def parse_key(text: str) -> tuple[str, str] | None:
    """(prefix, secret) of a presented key, or None when it is not one in form."""
    m = _KEY.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def verify(stored: ApiKey | None, secret: str) -> bool:
    """Whether `secret` is the secret of `stored` and the key is not revoked (constant time
    in the secret)."""
    if stored is None or stored.revoked_at is not None:
        hmac.compare_digest(secret_digest(secret), b"\0" * 32)  # the same work either way
        return False
    return hmac.compare_digest(secret_digest(secret), stored.secret_sha256)
