"""The `tidings` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from schemas.settings import TidingsSettings, load_settings

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, TidingsSettings], int]


def _doctor(args: argparse.Namespace, settings: TidingsSettings) -> int:
    from streams.cli.doctor import run_checks

    results = run_checks(settings, args.service or None)
    for r in results:
        print(r.line())
    bad = [r.service for r in results if not r.ok]
    if bad:
        print(f"unhealthy: {', '.join(bad)}", file=sys.stderr)
        return 1
    print("all services healthy")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="tidings", description=__doc__)
    parser.add_argument("--config", help="YAML or TOML config file (also TIDINGS_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="check Kafka, Postgres, Redis and SMTP")
    doctor.add_argument(
        "--service",
        action="append",
        choices=["kafka", "postgres", "redis", "smtp"],
        help="check only this service (repeatable)",
    )
    doctor.set_defaults(handler=_doctor)

    from streams.cli import apikeys, catalog, commands, dlq, recipients, status, tenants

    commands.register(sub)
    apikeys.register(sub)
    catalog.register(sub)
    dlq.register(sub)
    recipients.register(sub)
    status.register(sub)
    tenants.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the settings once, run the subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
