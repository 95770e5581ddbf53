"""`tidings apikeys create TENANT --scope S | list | revoke PREFIX`: the gateway's API keys;
`tidings tokens sign TENANT RECIPIENT --ttl S`: a recipient token for the inbox API.

`create` prints the key once (`tdk_<prefix>_<secret>`): only its SHA-256 is stored, so a
lost key is revoked and replaced, never recovered. `list` shows prefixes, tenants, scopes
and whether revoked (never a secret). `revoke` ends a key; a running gateway stops
accepting it within `gateway.key_cache_s` (docs/api.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from schemas.settings import TidingsSettings
from streams.exceptions import DependencyDown, FatalStageError
from streams.http.gateway.keys import SCOPES, issue_key
from streams.http.gateway.keystore import create_key, list_keys, revoke_key
from streams.http.gateway.tokens import sign_recipient_token

__all__ = ["register"]


T = TypeVar("T")


def _db(call: Callable[[], T]) -> T | None:
    """`call()`, or None with the error on stderr when Postgres is away or unmigrated."""
    try:
        return call()
    except (DependencyDown, FatalStageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _create(args: argparse.Namespace, s: TidingsSettings) -> int:
    try:
        issued = issue_key(args.tenant, tuple(args.scope or ()), args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if _db(lambda: create_key(s.postgres.conninfo(), issued.key)) is None:
        return 1
    print(issued.text)
    print(
        f"key {issued.key.prefix} for tenant {args.tenant!r}, scopes "
        f"{', '.join(issued.key.scopes)}: shown once, store it now",
        file=sys.stderr,
    )
    return 0


def _list(args: argparse.Namespace, s: TidingsSettings) -> int:
    keys = _db(lambda: list_keys(s.postgres.conninfo(), args.tenant))
    if keys is None:
        return 1
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        print(f"{k.prefix}  {k.tenant or '-':<20} {','.join(k.scopes):<36} {state}  {k.name}")
    return 0


def _revoke(args: argparse.Namespace, s: TidingsSettings) -> int:
    done = _db(lambda: revoke_key(s.postgres.conninfo(), args.prefix))
    if done is None:
        return 1
    if not done:
        print(
            f"error: no active key {args.prefix!r}; `tidings apikeys list` shows them",
            file=sys.stderr,
        )
        return 1
    print(f"revoked {args.prefix}")
    return 0


def _sign(args: argparse.Namespace, s: TidingsSettings) -> int:
    try:
        pem = Path(args.es256_key).read_text() if args.es256_key else None
        print(sign_recipient_token(s.gateway, args.tenant, args.recipient, args.ttl,
                                   private_key_pem=pem))  # fmt: skip
    except OSError as exc:
        print(f"error: cannot read the key {args.es256_key}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `apikeys create | list | revoke` and `tokens sign` to `sub`."""
    t = sub.add_parser("tokens", help="sign recipient tokens for the gateway's inbox API")
    tsub = t.add_subparsers(dest="tokens_command", required=True)
    sign = tsub.add_parser(
        "sign",
        help="print a token for RECIPIENT of TENANT (an HS256 or ES256 JWT)",
        description="Your backend signs these in production (any JWT "
        "library: claims tid, sub, iat, exp); this is for trying it.",
    )
    sign.add_argument("tenant")
    sign.add_argument("recipient", help="the recipient id (the in-app channel's recipient)")
    sign.add_argument("--ttl", type=int, default=3600, help="seconds it is valid (3600)")
    sign.add_argument(
        "--es256-key", metavar="PEM", default=None,
        help="sign ES256 with this EC P-256 private key (its public key in "
        "gateway.recipient_token_public_keys) instead of HS256 with the tenant's secret",
    )  # fmt: skip
    sign.set_defaults(handler=_sign)
    p = sub.add_parser("apikeys", help="create, list and revoke the gateway's API keys")
    psub = p.add_subparsers(dest="apikeys_command", required=True)
    create = psub.add_parser("create", help="make a key for TENANT (printed once)")
    create.add_argument("tenant", help="the tenant the key acts for ('' for none)")
    create.add_argument(
        "--scope", action="append", choices=SCOPES, help="what the key may do (repeat for several)"
    )
    create.add_argument("--name", default="", help="a label, to tell keys apart")
    create.set_defaults(handler=_create)
    ls = psub.add_parser("list", help="the keys (prefix, tenant, scopes, state)")
    ls.add_argument("--tenant", default=None, help="only this tenant's")
    ls.set_defaults(handler=_list)
    rv = psub.add_parser("revoke", help="end a key")
    rv.add_argument("prefix", help="the key's prefix (`tidings apikeys list`)")
    rv.set_defaults(handler=_revoke)
