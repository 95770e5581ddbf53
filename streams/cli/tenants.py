"""`tidings tenants defaults TENANT`: show or set a tenant's default preferences.

A tenant's defaults lie under every recipient's own preferences, and its required
categories go past opt-outs (docs/recipients.md, "Preferences"). `--set FILE|JSON` replaces
the default preferences, `--required a,b` the required categories; both are checked first
(the schema's bounds, and the categories and rules of the catalog at `--catalog`, default
`catalog.path`). Written to Postgres directly, or with `--publish` produced as a
`tidings.tenant.defaults` record on the recipients topic, which the recipients stage
applies (so a rebuild of the directory from the topic keeps them). Deliver re-checks
notifications already routed for the tenant's recipients (their defaults changed after
route decided).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from confluent_kafka import KafkaException
from pydantic import ValidationError

from catalog.preferences import unknown_defaults
from schemas.recipient import Preferences, TenantDefaults, tenant_defaults_key
from schemas.settings import TidingsSettings
from streams.cli.publish import ChangePublisher
from streams.exceptions import DependencyDown, FatalStageError
from streams.state import Directory, DirectoryRefused
from streams.state.recipient_rows import describe, tenant_defaults_change

__all__ = ["register"]


def _preferences(text: str) -> Preferences:
    """`text` as Preferences: a JSON document, or the path of a file holding one."""
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if not text.lstrip().startswith("{") else text
    return Preferences.model_validate_json(raw)


def _check(prefs: Preferences, required: list[str], catalog_dir: str | None) -> str | None:
    if not catalog_dir:
        return None
    from catalog import CatalogLoadError, load_catalog

    try:
        cat = load_catalog(catalog_dir)
    except CatalogLoadError as exc:
        return f"the catalog at {catalog_dir} does not load, so nothing can be checked: {exc}"
    return unknown_defaults(prefs, required, cat.categories(), cat.rule_ids(),
                            required_field="--required")  # fmt: skip


def _publish(s: TidingsSettings, d: TenantDefaults) -> int:
    """Produce `d` to the recipients topic (the recipients stage writes it); 0 once acked."""
    try:
        out = ChangePublisher(s)
        out.send(tenant_defaults_key(d.tenant), tenant_defaults_change(d))
        problem = out.finish(30)
    except (FatalStageError, KafkaException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if problem:
        print(f"error: {problem}; publish it again (it replaces the tenant's defaults, so a "
              "repeat is harmless)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"tenant {d.tenant!r}: default preferences and required categories "
          f"({', '.join(d.required_categories) or 'none'}) published on {out.topic}; "
          "the recipients stage applies them")  # fmt: skip
    return 0


def _defaults(args: argparse.Namespace, s: TidingsSettings) -> int:
    tenant: str = args.tenant
    directory = Directory(s.postgres.conninfo(), name="tenants")
    try:
        prefs, required = directory.tenant_defaults([tenant])[tenant]
        if args.set is None and args.required is None:
            doc = {"tenant": tenant, "preferences": prefs.model_dump(mode="json"),
                   "required_categories": list(required)}  # fmt: skip
            print(json.dumps(doc, indent=2))
            return 0
        try:
            if args.set is not None:
                prefs = _preferences(args.set)
        except (ValidationError, OSError, ValueError) as exc:
            print(f"error: --set {args.set!r}: {exc}", file=sys.stderr)
            return 2
        if args.required is not None:
            required = tuple(x.strip() for x in args.required.split(",") if x.strip())
        problem = _check(prefs, list(required), args.catalog or str(s.catalog.path))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        if args.publish:
            try:
                d = TenantDefaults(tenant=tenant, preferences=prefs, required_categories=required)
            except ValidationError as exc:  # the record's bounds (a `/` in the tenant, say)
                print(f"error: {describe(exc)}", file=sys.stderr)
                return 2
            return _publish(s, d)
        directory.set_tenant_defaults(tenant, prefs, required)
        print(f"tenant {tenant!r}: default preferences and required categories "
              f"({', '.join(required) or 'none'}) stored")  # fmt: skip
        return 0
    except (DependencyDown, FatalStageError, DirectoryRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        directory.close()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tenants defaults` to `sub`."""
    ten = sub.add_parser("tenants", help="a tenant's default preferences")
    tsub = ten.add_subparsers(dest="tenants_command", required=True)
    d = tsub.add_parser(
        "defaults",
        help="show (no options) or set a tenant's default preferences and required categories",
        description="Default preferences lie under every recipient's own; required "
        "categories go past opt-outs. docs/recipients.md.",
    )
    d.add_argument("tenant", help="the tenant id ('' for recipients without one)")
    d.add_argument("--set", metavar="JSON|FILE",
                   help="the default preferences (JSON, or a file of it)")  # fmt: skip
    d.add_argument("--required", metavar="CAT,CAT",
                   help="the required categories (replaces them; '' for none)")  # fmt: skip
    d.add_argument("--catalog", metavar="DIR",
                   help="check category and rule names against this catalog "
                   "(default: catalog.path)")  # fmt: skip
    d.add_argument("--publish", action="store_true",
                   help="produce the change to the recipients topic (the recipients stage "
                   "writes it; a rebuild of the directory from the topic keeps it) instead "
                   "of writing Postgres directly")  # fmt: skip
    d.set_defaults(handler=_defaults)
