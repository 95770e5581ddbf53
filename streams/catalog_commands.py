"""`tidings catalog …`: check a catalog (and, as they land, dry-run, diff, publish)."""

from __future__ import annotations

import argparse
import sys

from schemas.settings import TidingsSettings

__all__ = ["register"]


def _check(args: argparse.Namespace, s: TidingsSettings) -> int:
    from catalog import CatalogLoadError, load_catalog

    try:
        cat = load_catalog(args.dir)
    except CatalogLoadError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"{args.dir}: ok, version {cat.version}, {len(cat.rules)} rule(s)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `catalog` and its subcommands to `sub`."""
    cat = sub.add_parser("catalog", help="check, dry-run, diff and publish rule catalogs")
    csub = cat.add_subparsers(dest="catalog_command", required=True)
    check = csub.add_parser("check", help="validate a catalog; exits 1 listing every problem")
    check.add_argument("dir")
    check.set_defaults(handler=_check)
